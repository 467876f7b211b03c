"""GetToken, Volcengine-compatible: a V4-signed OpenAPI call that answers a SAMI token."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from .auth.authenticator import TokenService
from .auth.signature import Fault, SignatureError, SignedRequest, verify
from .config import MAX_TOKEN_TTL
from .config.access_keys import AccessKey
from .errors import Code
from .protocol.envelope import new_task_id
from .web.body import BodyTimeout, BodyTooLarge, BodyUnreadable, read_capped
from .web.state import CONTEXT

log = logging.getLogger(__name__)

ACTION = "GetToken"
VERSION = "2021-07-27"
SERVICE = "sami"
REGION = "cn-north-1"
TOKEN_VERSION = "volc-auth-v1"
DEFAULT_EXPIRATION = 3600  # seconds, when a client sends no `expiration` (SAMI's documented example)
MAX_BODY_BYTES = 64 * 1024  # a GetToken body is about 100 bytes: a larger one is no GetToken client
BODY_SECONDS = 30.0  # nor is one that takes this long to send them


@dataclass(frozen=True)
class OpenApiStatus:
    """One row of the OpenAPI error table: HTTP status, CodeN and Code."""

    http: int
    code_n: int
    code: str


class OpenApiCode(Enum):
    """The Volcengine OpenAPI errors (`ResponseMetadata.Error`) GetToken answers with.

    Distinct from the SAMI invoke table in errors.py: another envelope, other numbers.
    """

    MISSING_PARAMETER = OpenApiStatus(400, 100002, "MissingParameter")
    MISSING_REQUEST_INFO = OpenApiStatus(400, 100004, "MissingRequestInfo")
    MISSING_SIGNATURE = OpenApiStatus(401, 100005, "MissingSignature")
    INVALID_TIMESTAMP = OpenApiStatus(400, 100006, "InvalidTimestamp")
    INVALID_ACTION_OR_VERSION = OpenApiStatus(404, 100008, "InvalidActionOrVersion")
    INVALID_ACCESS_KEY = OpenApiStatus(401, 100009, "InvalidAccessKey")
    SIGNATURE_DOES_NOT_MATCH = OpenApiStatus(401, 100010, "SignatureDoesNotMatch")
    ACCESS_DENIED = OpenApiStatus(403, 100013, "AccessDenied")
    INTERNAL_ERROR = OpenApiStatus(500, 100014, "InternalError")


SIGNATURE_CODES = {
    Fault.MISSING: OpenApiCode.MISSING_SIGNATURE,
    Fault.INCOMPLETE: OpenApiCode.MISSING_REQUEST_INFO,
    Fault.STALE: OpenApiCode.INVALID_TIMESTAMP,
    Fault.UNKNOWN_KEY: OpenApiCode.INVALID_ACCESS_KEY,
    Fault.MISMATCH: OpenApiCode.SIGNATURE_DOES_NOT_MATCH,
}


class OpenApiError(Exception):
    """An OpenAPI answer that is not success: its row of the table and a message."""

    def __init__(self, kind: OpenApiCode, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def of_signature(cls, exc: SignatureError) -> OpenApiError:
        return cls(SIGNATURE_CODES[exc.fault], exc.message)

    @property
    def code_n(self) -> int:
        return self.kind.value.code_n

    @property
    def code(self) -> str:
        return self.kind.value.code

    @property
    def http_status(self) -> int:
        return self.kind.value.http


@dataclass(frozen=True)
class TokenRequest:
    """The body of a GetToken call: the appkey and the lifetime asked for (before the cap)."""

    appkey: str
    expiration: int


@dataclass(frozen=True)
class Grant:
    """A token issued: to which access key, for which appkey, until when (unix seconds)."""

    access_key: str
    appkey: str
    token: str = field(repr=False)
    expires_at: int


def _bad_body(detail: str) -> OpenApiError:
    return OpenApiError(OpenApiCode.MISSING_REQUEST_INFO, detail)


def parse_token_request(body: bytes) -> TokenRequest:
    """Validate `{"token_version":"volc-auth-v1","appkey":"...","expiration":3600}`.

    token_version may be absent or empty (the Go SDK's zero value); expiration absent means
    DEFAULT_EXPIRATION; it must otherwise be a positive JSON integer. Anything else is a
    MissingRequestInfo (400) naming the field.
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad_body("the body is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise _bad_body("the body is not a JSON object")
    if obj.get("token_version") not in (None, "", TOKEN_VERSION):
        raise _bad_body(f"token_version must be {TOKEN_VERSION}")
    appkey = obj.get("appkey")
    if not isinstance(appkey, str) or not appkey:
        raise _bad_body("appkey is missing or not a string")
    expiration = obj.get("expiration")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise _bad_body("expiration must be a whole number of seconds")
    if expiration <= 0:
        raise _bad_body(f"expiration must be positive (it is capped at {MAX_TOKEN_TTL} seconds)")
    return TokenRequest(appkey, expiration)


class GetTokenService:
    """The GetToken rule without HTTP: signature, body, appkey allowed, token issued.

    `access_keys` and `known_appkeys` are consulted on every call, so a mapping that is
    replaced in place takes effect without a restart.
    """

    def __init__(self, access_keys: Mapping[str, AccessKey], tokens: TokenService,
                 known_appkeys: Collection[str], clock: Callable[[], float] = time.time) -> None:
        self._access_keys = access_keys
        self._tokens = tokens
        self._known_appkeys = known_appkeys
        self._clock = clock

    def replace(self, access_keys: Mapping[str, AccessKey], tokens: TokenService,
                known_appkeys: Collection[str]) -> None:
        """New credentials and keys, effective for the next request (a configuration reload)."""
        self._access_keys, self._tokens, self._known_appkeys = access_keys, tokens, known_appkeys

    def _secret_for(self, access_key: str) -> str | None:
        key = self._access_keys.get(access_key)
        return None if key is None else key.secret_key

    def grant(self, request: SignedRequest) -> Grant:
        """Verify the signed request and issue a token; OpenApiError says why not."""
        now = self._clock()
        try:
            access_key = verify(request, self._secret_for, now, region=REGION, service=SERVICE)
        except SignatureError as exc:
            raise OpenApiError.of_signature(exc) from exc
        asked = parse_token_request(request.body)
        key = self._access_keys.get(access_key)
        if key is None or asked.appkey not in key.appkeys:
            raise OpenApiError(OpenApiCode.ACCESS_DENIED,
                               f"access key {access_key} may not get tokens for appkey {asked.appkey}")
        if asked.appkey not in self._known_appkeys:
            raise OpenApiError(OpenApiCode.ACCESS_DENIED, f"appkey {asked.appkey} is not configured on this gateway")
        ttl = min(asked.expiration, MAX_TOKEN_TTL)
        token = self._tokens.issue(asked.appkey, ttl, now=now)
        return Grant(access_key, asked.appkey, token, int(now) + ttl)


GETTOKEN = web.AppKey("gettoken", GetTokenService)


def check_action(query: MultiMapping[str]) -> None:
    """Only `Action=GetToken&Version=2021-07-27` is served; each given exactly once."""
    actions, versions = query.getall("Action", []), query.getall("Version", [])
    if not actions or not versions:
        raise OpenApiError(OpenApiCode.MISSING_PARAMETER, "the request is missing the Action or Version parameter")
    if actions != [ACTION] or versions != [VERSION]:
        raise OpenApiError(OpenApiCode.INVALID_ACTION_OR_VERSION,
                           f"could not find operation {','.join(actions)} for version {','.join(versions)}")


async def read_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body within `limit`, or a MissingRequestInfo refusal."""
    try:
        return await read_capped(request, limit, BODY_SECONDS)
    except BodyTooLarge as exc:
        raise _bad_body(f"the body is larger than {limit} bytes") from exc
    except BodyUnreadable as exc:
        raise _bad_body("the body cannot be read") from exc
    except BodyTimeout as exc:
        raise _bad_body(f"the body did not arrive within {BODY_SECONDS:g} s") from exc


def signed_request(request: web.Request, body: bytes) -> SignedRequest:
    """What the signature covers, as received: raw path and query, headers (repeats joined by ',')."""
    headers = {name.lower(): ",".join(request.headers.getall(name)) for name in request.headers}
    return SignedRequest(request.method, request.rel_url.raw_path, request.rel_url.raw_query_string, headers, body)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(request_id: str, query: MultiMapping[str], exc: OpenApiError) -> web.Response:
    """The OpenAPI error envelope, `ResponseMetadata.Error`, with the error's HTTP status."""
    return _json({"ResponseMetadata": {
        "RequestId": request_id, "Action": query.get("Action", ""), "Version": query.get("Version", ""),
        "Service": SERVICE, "Region": REGION,
        "Error": {"CodeN": exc.code_n, "Code": exc.code, "Message": exc.message},
    }}, exc.http_status)


async def _grant(request: web.Request) -> Grant:
    check_action(request.query)
    body = await read_body(request)
    return request.app[GETTOKEN].grant(signed_request(request, body))


async def get_token(request: web.Request) -> web.Response:
    """`POST /?Action=GetToken&Version=2021-07-27`: a SAMI token for a V4-signed request."""
    context = request.get(CONTEXT)
    request_id = context.task_id if context is not None else new_task_id()
    try:
        grant = await _grant(request)
    except OpenApiError as exc:
        log.info("GetToken %s refused: %s %s", request_id, exc.code, exc.message)
        failure = exc
    except Exception:
        log.exception("GetToken %s: unexpected error", request_id)
        failure = OpenApiError(OpenApiCode.INTERNAL_ERROR, "internal error")
    else:
        log.info("GetToken %s: access key %s got a token for appkey %s until %d",
                 request_id, grant.access_key, grant.appkey, grant.expires_at)
        if context is not None:
            context.appkey = grant.appkey  # for the access log
            context.status_code = Code.OK.value.code
        return _json({"status_code": Code.OK.value.code, "status_text": Code.OK.value.text,
                      "task_id": request_id, "token": grant.token, "expires_at": grant.expires_at})
    if context is not None:
        context.status_code = failure.code_n
    response = error_response(request_id, request.query, failure)
    if not request.content.at_eof():
        response.force_close()  # the unread rest of the body must not be taken for the next request
    return response


def add_gettoken_routes(app: web.Application, service: GetTokenService) -> None:
    """Serve GetToken on `POST /` with `service`."""
    app[GETTOKEN] = service
    app.router.add_post("/", get_token)
