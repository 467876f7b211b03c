"""Who may call what: appkeys from configuration and JWT tokens bound to an appkey.

The rule (`Authenticator.authorize`) is apart from the plumbing: it takes the three routing
fields and returns the decision as a value, made once per request and kept on its context.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from ..config import DEFAULT_KID, MAX_TOKEN_TTL, AppKeyRule, Config
from ..config.limits import Quota
from ..errors import Code, error

ALGORITHM = "HS256"  # pinned: a token naming any other algorithm is refused
ISSUER = "sami-gateway"
LEEWAY_SECONDS = 5  # tolerated clock skew between issuer and verifier


class TokenService:
    """Issues HS256 JWTs whose subject is an appkey, signed with the current key (`kid` in the header),
    and verifies tokens signed with it or with a previous key still listed (rotation)."""

    def __init__(self, secret: str, kid: str = DEFAULT_KID, previous: Mapping[str, str] | None = None) -> None:
        self._secret = secret
        self._kid = kid
        self._keys = {**(previous or {}), kid: secret}

    @classmethod
    def from_config(cls, config: Config) -> TokenService:
        return cls(config.token_secret, config.token_kid, config.token_previous_keys)

    def issue(self, appkey: str, ttl: int, now: float | None = None) -> str:
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"ttl must be 1..{MAX_TOKEN_TTL} seconds")
        issued = int(time.time() if now is None else now)
        claims = {"iss": ISSUER, "sub": appkey, "iat": issued, "nbf": issued,
                  "exp": issued + ttl, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"kid": self._kid})

    def _key_for(self, token: str) -> str | None:
        """The secret named by the token's `kid` (a token without one: the current key)."""
        kid = jwt.get_unverified_header(token).get("kid", self._kid)
        return self._keys.get(kid) if isinstance(kid, str) else None

    def subject(self, token: str) -> str:
        """The appkey a valid token is bound to (a Bearer token names no appkey beside it)."""
        subject: str = self._claims(token)["sub"]
        return subject

    def verify(self, token: str, appkey: str) -> dict[str, Any]:
        """The token's claims if it is valid now and bound to `appkey`."""
        claims = self._claims(token)
        if not hmac.compare_digest(claims["sub"].encode(), appkey.encode()):
            raise error(Code.DENIED_ACCESS, "IllegalToken")
        return claims

    def _claims(self, token: str) -> dict[str, Any]:
        """The claims of a token valid now, decoded and verified once; its subject a non-empty string."""
        denied = error(Code.DENIED_ACCESS, "IllegalToken")
        if not token:
            raise denied
        try:
            secret = self._key_for(token)
            if secret is None:
                raise denied
            claims: dict[str, Any] = jwt.decode(
                token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "sub", "iss"]})
        except jwt.PyJWTError as exc:
            raise denied from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise denied
        return claims


@dataclass(frozen=True)
class Authorization:
    """The decision for one request: this appkey, with a valid token, may call this namespace
    under this quota."""

    appkey: str
    namespace: str
    quota: Quota


class Authenticator:
    """The auth rule of an invoke: appkey known, token valid for it, namespace served and allowed."""

    def __init__(self, appkeys: Mapping[str, AppKeyRule], tokens: TokenService,
                 namespaces: Collection[str], default_quota: Quota) -> None:
        self._appkeys = appkeys
        self._tokens = tokens
        self._namespaces = frozenset(namespaces)
        self._default_quota = default_quota

    def replace(self, appkeys: Mapping[str, AppKeyRule], tokens: TokenService, default_quota: Quota) -> None:
        """New appkeys, keys and quotas, effective for the next request (a configuration reload)."""
        self._appkeys, self._tokens, self._default_quota = appkeys, tokens, default_quota

    def authorize_bearer(self, header: str, namespace: str) -> Authorization:
        """An `Authorization: Bearer <token>` header (the Jobs API): the token names its appkey."""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise error(Code.DENIED_ACCESS, "missing Bearer token")
        appkey = self._tokens.subject(token.strip())  # the token, decoded and verified once
        return self._allowed(appkey, namespace)

    def authorize(self, appkey: str, token: str, namespace: str) -> Authorization:
        """An invoke's credentials: the appkey it names, and a token bound to it."""
        self._known(appkey)
        self._tokens.verify(token, appkey)
        return self._allowed(appkey, namespace)

    def quota_of(self, appkey: str) -> Quota:
        """The appkey's quota now (the default one for an appkey no longer configured)."""
        rule = self._appkeys.get(appkey)
        return (rule.quota if rule is not None else None) or self._default_quota

    def _known(self, appkey: str) -> AppKeyRule:
        rule = self._appkeys.get(appkey) if appkey else None
        if rule is None:
            raise error(Code.INVALID_ACCESS, "unknown appkey" if appkey else "missing appkey")
        return rule

    def _allowed(self, appkey: str, namespace: str) -> Authorization:
        rule = self._known(appkey)
        if namespace not in self._namespaces or not rule.allows(namespace):
            raise error(Code.DENIED_NAMESPACE, namespace or "missing namespace")
        return Authorization(appkey, namespace, rule.quota or self._default_quota)


def authorize_from_query(query: Mapping[str, str], auth: Authenticator) -> Authorization | None:
    """Clients that put credentials in the query (the Go SDK) are checked before the body is read."""
    if all(query.get(name) for name in ("appkey", "token", "namespace")):
        return auth.authorize(query["appkey"], query["token"], query["namespace"])
    return None
