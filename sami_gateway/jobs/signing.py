"""Signed URLs: a path that works without a token until it expires, like a presigned S3 URL.

The signature is HMAC-SHA256 over the method, the path and the expiry, with a key derived from
the gateway's token secret, so nothing else needs configuring and rotating the secret revokes
every URL.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from ..errors import Code, error

_PURPOSE = b"sami-gateway signed URLs v1"


class UrlSigner:
    """Signs and checks `(method, path, expires)`."""

    def __init__(self, token_secret: str) -> None:
        self._key = hmac.new(token_secret.encode(), _PURPOSE, hashlib.sha256).digest()

    def _mac(self, method: str, path: str, expires: int) -> str:
        message = f"{method.upper()}\n{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, ttl: float, now: float | None = None) -> tuple[str, int]:
        """`path?expires=..&signature=..` valid for `ttl` seconds, and its expiry (unix seconds)."""
        expires = math.ceil((time.time() if now is None else now) + ttl)
        query = urlencode({"expires": expires, "signature": self._mac(method, path, expires)})
        return f"{path}?{query}", expires

    def check(self, method: str, path: str, query: Mapping[str, str], now: float | None = None) -> None:
        """Raise 403 unless the query signs this method and path and has not expired."""
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            raise error(Code.FORBIDDEN, "missing or malformed expires") from None
        signature = query.get("signature", "")
        if not hmac.compare_digest(signature.encode(), self._mac(method, path, expires).encode()):
            raise error(Code.FORBIDDEN, "bad signature")
        if (time.time() if now is None else now) > expires:
            raise error(Code.FORBIDDEN, "the signed URL has expired")

    def has_signature(self, query: Mapping[str, str]) -> bool:
        return "signature" in query
