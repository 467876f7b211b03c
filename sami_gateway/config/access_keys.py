"""GetToken credentials: access key / secret key pairs and the appkeys each may ask tokens for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MIN_SECRET_KEY_LENGTH = 16  # a shorter secret key could be guessed offline from one signed request
_ACCESS_KEY_FORBIDDEN = frozenset("/,: \t\r\n")  # separators of the Credential and of SAMI_ACCESS_KEYS


@dataclass(frozen=True)
class AccessKey:
    """An access key / secret key pair and the appkeys it may get tokens for."""

    access_key: str
    secret_key: str = field(repr=False)  # never printed, logged or echoed
    appkeys: frozenset[str]


def _access_key(access_key: str, secret_key: str, appkeys: list[str]) -> AccessKey:
    if not access_key or _ACCESS_KEY_FORBIDDEN & set(access_key):
        # Not echoed: with a wrong separator, what was taken for the access key holds the secret key.
        raise ValueError("an access key is empty or contains one of / , : or whitespace")
    if len(secret_key) < MIN_SECRET_KEY_LENGTH:
        raise ValueError(f"access key {access_key!r}: the secret key needs at least {MIN_SECRET_KEY_LENGTH} characters")
    if not appkeys or not all(appkeys):
        raise ValueError(f"access key {access_key!r}: the appkey list is empty or has an empty name")
    return AccessKey(access_key, secret_key, frozenset(appkeys))


def _from_table(value: Mapping[Any, Any]) -> list[AccessKey]:
    keys = []
    for name, spec in value.items():
        if not isinstance(spec, Mapping) or set(spec) != {"secret_key", "appkeys"}:
            raise ValueError(f"access key {name!r} must be a table with exactly secret_key and appkeys")
        secret, appkeys = spec["secret_key"], spec["appkeys"]
        if not isinstance(secret, str) or not isinstance(appkeys, list) or \
                not all(isinstance(appkey, str) for appkey in appkeys):
            raise ValueError(f"access key {name!r}: secret_key must be a string and appkeys a list of strings")
        keys.append(_access_key(str(name), secret, appkeys))
    return keys


def _from_text(value: str) -> list[AccessKey]:
    keys = []
    for number, entry in enumerate((item.strip() for item in value.split(",")), start=1):
        if not entry:
            continue
        access_key, _, rest = entry.partition(":")
        secret, colon, appkeys = rest.rpartition(":")  # a secret key may itself contain ':'
        if not colon or not secret:  # the entry is not echoed: it holds a secret key
            raise ValueError(f"access key entry {number} must be AK:SK:appkey1|appkey2")
        keys.append(_access_key(access_key, secret, appkeys.split("|")))
    return keys


def parse_access_keys(value: Any) -> dict[str, AccessKey]:
    """`AK:SK:appkey1|appkey2,AK2:SK2:k3`, or a TOML table {AK = {secret_key = "...", appkeys = [...]}}.

    ValueError messages name the access key, never a secret key.
    """
    if isinstance(value, Mapping):
        keys = _from_table(value)
    elif isinstance(value, str):
        keys = _from_text(value)
    else:
        raise ValueError("expected AK:SK:appkey1|appkey2 entries separated by commas, or a table")
    parsed: dict[str, AccessKey] = {}
    for key in keys:
        if key.access_key in parsed:
            raise ValueError(f"access key {key.access_key!r} is given twice")
        parsed[key.access_key] = key
    return parsed
