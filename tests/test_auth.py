"""Tokens and the auth rule, without HTTP."""

from __future__ import annotations

import time

import jwt
import pytest

from sami_gateway.auth.authenticator import ALGORITHM, Authenticator, TokenService
from sami_gateway.config import DEFAULT_QUOTA, MAX_TOKEN_TTL, AppKeyRule
from sami_gateway.config.limits import Quota
from sami_gateway.errors import Code, GatewayError

SECRET = "s" * 64
TOKENS = TokenService(SECRET)
VIP = Quota(rate=100, burst=100, concurrent=50)
AUTH = Authenticator({"a": AppKeyRule("a"), "b": AppKeyRule("b", frozenset({"Other"}), VIP)}, TOKENS,
                     ["MusicSourceSeparate", "Other"], DEFAULT_QUOTA)


def code_of(call: object) -> Code:
    with pytest.raises(GatewayError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_issued_token_is_url_safe_and_verifies() -> None:
    token = TOKENS.issue("a", 60)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert TOKENS.verify(token, "a")["sub"] == "a"
    AUTH.authorize("a", token, "MusicSourceSeparate")


def test_the_decision_is_a_value_with_the_appkeys_quota() -> None:
    decision = AUTH.authorize("a", TOKENS.issue("a", 60), "MusicSourceSeparate")
    assert (decision.appkey, decision.namespace, decision.quota) == ("a", "MusicSourceSeparate", DEFAULT_QUOTA)
    assert AUTH.authorize("b", TOKENS.issue("b", 60), "Other").quota == VIP


def test_token_is_bound_to_its_appkey() -> None:
    assert code_of(lambda: TOKENS.verify(TOKENS.issue("a", 60), "b")) is Code.DENIED_ACCESS


def test_expired_token_is_refused() -> None:
    old = TOKENS.issue("a", 10, now=time.time() - 100)
    assert code_of(lambda: TOKENS.verify(old, "a")) is Code.DENIED_ACCESS


def test_other_secret_and_tampering_are_refused() -> None:
    foreign = TokenService("x" * 40).issue("a", 60)
    assert code_of(lambda: TOKENS.verify(foreign, "a")) is Code.DENIED_ACCESS
    token = TOKENS.issue("a", 60)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert code_of(lambda: TOKENS.verify(tampered, "a")) is Code.DENIED_ACCESS


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_algorithm_is_pinned(algorithm: str) -> None:
    assert algorithm != ALGORITHM
    claims = {"iss": "sami-gateway", "sub": "a", "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm=algorithm)
    assert code_of(lambda: TOKENS.verify(token, "a")) is Code.DENIED_ACCESS


def test_unsigned_token_is_refused() -> None:
    claims = {"iss": "sami-gateway", "sub": "a", "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode(claims, None, algorithm="none")
    assert code_of(lambda: TOKENS.verify(token, "a")) is Code.DENIED_ACCESS


def test_ttl_is_capped_at_one_day() -> None:
    with pytest.raises(ValueError):
        TOKENS.issue("a", MAX_TOKEN_TTL + 1)


@pytest.mark.parametrize(("appkey", "token", "namespace", "code"), [
    ("", "x", "MusicSourceSeparate", Code.INVALID_ACCESS),
    ("nobody", "x", "MusicSourceSeparate", Code.INVALID_ACCESS),
    ("a", "", "MusicSourceSeparate", Code.DENIED_ACCESS),
    ("a", "garbage", "MusicSourceSeparate", Code.DENIED_ACCESS),
    ("a", None, "Unknown", Code.DENIED_NAMESPACE),
    ("a", None, "", Code.DENIED_NAMESPACE),
    ("b", None, "MusicSourceSeparate", Code.DENIED_NAMESPACE),
])
def test_auth_rule(appkey: str, token: str | None, namespace: str, code: Code) -> None:
    real = TOKENS.issue(appkey, 60) if token is None else token
    assert code_of(lambda: AUTH.authorize(appkey, real, namespace)) is code


def test_key_rotation_by_kid() -> None:
    old = TokenService("o" * 40, kid="2025")
    token = old.issue("a", 60)
    assert jwt.get_unverified_header(token)["kid"] == "2025"
    rotated = TokenService("n" * 40, kid="2026", previous={"2025": "o" * 40})
    assert rotated.verify(token, "a")["sub"] == "a"  # still valid after the rotation
    assert jwt.get_unverified_header(rotated.issue("a", 60))["kid"] == "2026"
    retired = TokenService("n" * 40, kid="2026")
    assert code_of(lambda: retired.verify(token, "a")) is Code.DENIED_ACCESS  # its key is gone
    forged = jwt.encode({"iss": "sami-gateway", "sub": "a", "iat": int(time.time()), "exp": int(time.time()) + 60},
                        "o" * 40, algorithm="HS256", headers={"kid": "2026"})
    assert code_of(lambda: rotated.verify(forged, "a")) is Code.DENIED_ACCESS  # kid names the key


def test_replace_revokes_an_appkey() -> None:
    auth = Authenticator({"a": AppKeyRule("a"), "b": AppKeyRule("b")}, TOKENS, ["MusicSourceSeparate"],
                         DEFAULT_QUOTA)
    token = TOKENS.issue("b", 60)
    auth.authorize("b", token, "MusicSourceSeparate")
    auth.replace({"a": AppKeyRule("a")}, TOKENS, DEFAULT_QUOTA)
    assert code_of(lambda: auth.authorize("b", token, "MusicSourceSeparate")) is Code.INVALID_ACCESS


@pytest.mark.parametrize("how", ["bearer", "invoke"])
def test_a_token_is_decoded_and_verified_once(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """The decision is made once and kept: a Bearer token names its appkey and is checked in the
    same decoding (it used to be decoded three times and verified twice)."""
    token = TOKENS.issue("a", 60)
    decodes: list[bool] = []
    real = jwt.decode

    def counted(*args: object, **kwargs: object) -> object:
        decodes.append(bool(kwargs.get("options", {}).get("verify_signature", True)))  # type: ignore[union-attr]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counted)
    decided = (AUTH.authorize_bearer(f"Bearer {token}", "MusicSourceSeparate") if how == "bearer"
               else AUTH.authorize("a", token, "MusicSourceSeparate"))
    assert decided.appkey == "a" and decodes == [True]
