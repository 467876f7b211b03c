"""Volcengine V4 (HMAC-SHA256) request signing, as GetToken expects it (no volcengine dependency)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["SIGNED_HEADERS", "sign_request", "canonical_request", "signing_key"]

ALGORITHM = "HMAC-SHA256"
TERMINATOR = "request"  # the last word of the credential scope and of the key derivation
SIGNED_HEADERS = ("content-type", "host", "x-content-sha256", "x-date")  # what the official signers cover
_UNRESERVED = "-_.~"  # with A-Z a-z 0-9: what RFC 3986 encoding keeps as is


def _encode(text: str) -> str:
    return quote(text, safe=_UNRESERVED)


def _canonical_uri(path: str) -> str:
    return "/".join(_encode(unquote(segment)) for segment in path.split("/")) or "/"


def _canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True), key=lambda pair: pair[0])
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in pairs)


def _host(netloc: str) -> str:
    host = netloc.rpartition("@")[2]
    return host[:-3] if host.endswith(":80") else host[:-4] if host.endswith(":443") else host


def canonical_request(method: str, url: str, headers: Mapping[str, str], body: bytes,
                      signed_headers: tuple[str, ...] = SIGNED_HEADERS) -> str:
    """The six lines a V4 signature covers; `headers` must hold every signed header (lowercase names)."""
    parts = urlsplit(url)
    header_lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join([method.upper(), _canonical_uri(parts.path), _canonical_query(parts.query), header_lines,
                      ";".join(signed_headers), hashlib.sha256(body).hexdigest()])


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """HMAC(HMAC(HMAC(HMAC(secret, date), region), service), "request")."""
    key = secret_key.encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_request(method: str, url: str, body: bytes, access_key: str, secret_key: str, *,
                 region: str = "cn-north-1", service: str = "sami", content_type: str = "application/json",
                 now: float | None = None) -> dict[str, str]:
    """The headers to send with this request: Host, Content-Type, X-Date, X-Content-Sha256, Authorization.

    `url` is the full URL as sent (its query is part of the signature); `now` is unix seconds (default: the
    clock). Send the Host header returned, so the signed and the sent value are the same.
    """
    x_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    headers = {
        "content-type": content_type,
        "host": _host(urlsplit(url).netloc),
        "x-content-sha256": hashlib.sha256(body).hexdigest(),
        "x-date": x_date,
    }
    scope = f"{x_date[:8]}/{region}/{service}/{TERMINATOR}"
    digest = hashlib.sha256(canonical_request(method, url, headers, body).encode()).hexdigest()
    string_to_sign = "\n".join([ALGORITHM, x_date, scope, digest])
    signature = hmac.new(signing_key(secret_key, x_date[:8], region, service), string_to_sign.encode(),
                         hashlib.sha256).hexdigest()
    return {
        "Host": headers["host"], "Content-Type": content_type, "X-Date": x_date,
        "X-Content-Sha256": headers["x-content-sha256"],
        "Authorization": (f"{ALGORITHM} Credential={access_key}/{scope}, "
                          f"SignedHeaders={';'.join(SIGNED_HEADERS)}, Signature={signature}"),
    }
