"""GetToken over HTTP, with the official `volcengine` signer as the client."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from volcengine.ApiInfo import ApiInfo
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.base.Service import Service
from volcengine.Credentials import Credentials
from volcengine.ServiceInfo import ServiceInfo

from sami_gateway.auth.authenticator import TokenService
from sami_gateway.auth.signature import MAX_SKEW_SECONDS
from sami_gateway.config import MAX_TOKEN_TTL
from sami_gateway.config.access_keys import parse_access_keys
from sami_gateway.errors import GatewayError
from sami_gateway.gettoken import DEFAULT_EXPIRATION, MAX_BODY_BYTES, GetTokenService, add_gettoken_routes

TOKEN_SECRET = "t" * 32
AK, SK = "AKLTgatewayTestKey", "gatewayTestSecretKey/with+chars=="
OTHER_AK, OTHER_SK = "AKLTotherKey", "otherSecretKey0123456789"
ACCESS_KEYS = f"{AK}:{SK}:app-a|app-unknown,{OTHER_AK}:{OTHER_SK}:app-b"
KNOWN_APPKEYS = {"app-a", "app-b"}  # app-unknown is allowed to AK but not configured
QUERY = {"Action": "GetToken", "Version": "2021-07-27"}
SDK_VERSION_PINNED = "1.0.229"


@dataclass
class Gateway:
    client: TestClient
    tokens: TokenService

    @property
    def host(self) -> str:
        return f"{self.client.host}:{self.client.port}"


class BrokenTokens(TokenService):
    def issue(self, appkey: str, ttl: int, now: float | None = None) -> str:
        raise RuntimeError("boom " + TOKEN_SECRET)


async def make_gateway(aiohttp_client: Any, tokens: TokenService) -> Gateway:
    app = web.Application()
    add_gettoken_routes(app, GetTokenService(parse_access_keys(ACCESS_KEYS), tokens, KNOWN_APPKEYS))
    return Gateway(await aiohttp_client(app), tokens)


@pytest.fixture
async def gateway(aiohttp_client: Any) -> Gateway:
    return await make_gateway(aiohttp_client, TokenService(TOKEN_SECRET))


@pytest.fixture
def sdk_date(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Set the official signer's clock: call with a unix time."""
    def set_clock(when: float) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
        monkeypatch.setattr(SignerV4, "get_current_format_date", lambda: stamp)
    return set_clock


def token_body(appkey: str = "app-a", expiration: Any = 3600, **extra: Any) -> bytes:
    body = {"token_version": "volc-auth-v1", "appkey": appkey, "expiration": expiration, **extra}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def signed(host: str, body: bytes, *, query: dict[str, str] | None = None, ak: str = AK, sk: str = SK,
           region: str = "cn-north-1", service: str = "sami") -> tuple[str, dict[str, str]]:
    """The URL path and headers of a request signed by the official signer, as Service.json signs it."""
    request = Request()
    request.set_method("POST")
    request.set_path("/")
    request.set_query(OrderedDict(QUERY if query is None else query))
    request.set_headers(OrderedDict({"Host": host, "Content-Type": "application/json"}))
    request.set_body(body)
    SignerV4.sign(request, Credentials(ak, sk, service, region))
    return "/?" + urlencode(request.query), dict(request.headers)


async def post_signed(gateway: Gateway, body: bytes, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    path, headers = signed(gateway.host, body, **kwargs)
    response = await gateway.client.post(path, data=body, headers=headers)
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def check_error(gateway: Gateway, answer: tuple[int, dict[str, Any]], http: int, code_n: int, code: str,
                      action: str = "GetToken", version: str = "2021-07-27") -> str:
    """The OpenAPI error envelope with this status and code; the gateway still issues tokens."""
    status, reply = answer
    metadata = reply["ResponseMetadata"]
    assert (status, metadata["Error"]["CodeN"], metadata["Error"]["Code"]) == (http, code_n, code)
    assert metadata["RequestId"] and metadata["Error"]["Message"]
    assert (metadata["Action"], metadata["Version"]) == (action, version)
    assert (metadata["Service"], metadata["Region"]) == ("sami", "cn-north-1")
    ok_status, ok = await post_signed(gateway, token_body())
    assert (ok_status, ok["status_code"]) == (200, 20000000)  # still serving
    return str(metadata["Error"]["Message"])


def sdk_get_token(host: str, body: dict[str, Any], ak: str = AK, sk: str = SK) -> dict[str, Any]:
    """GetToken the way a Python client of SAMI calls it: volcengine's Service.json (blocking)."""
    info = ServiceInfo(host, {}, Credentials(ak, sk, "sami", "cn-north-1"), 5, 5, "http")
    api = {"GetToken": ApiInfo("POST", "/", QUERY, {}, {})}
    service = Service(info, api)
    service.set_ak(ak)
    service.set_sk(sk)
    service.session.trust_env = False  # loopback, never through a proxy
    try:
        return dict(json.loads(service.json("GetToken", {}, json.dumps(body))))
    finally:
        service.session.close()


def test_the_pinned_sdk_is_the_one_installed() -> None:
    from importlib.metadata import version

    assert version("volcengine") == SDK_VERSION_PINNED


async def test_official_sdk_gets_a_token_that_verifies(gateway: Gateway) -> None:
    body = {"token_version": "volc-auth-v1", "appkey": "app-a", "expiration": 3600}
    reply = await asyncio.to_thread(sdk_get_token, gateway.host, body)
    assert set(reply) == {"status_code", "status_text", "task_id", "token", "expires_at"}
    assert (reply["status_code"], reply["status_text"]) == (20000000, "OK") and reply["task_id"]
    claims = gateway.tokens.verify(reply["token"], "app-a")
    assert abs(reply["expires_at"] - (time.time() + 3600)) <= 5 and claims["exp"] == reply["expires_at"]
    with pytest.raises(GatewayError):
        gateway.tokens.verify(reply["token"], "app-b")


async def test_official_sdk_sees_errors(gateway: Gateway) -> None:
    body = {"token_version": "volc-auth-v1", "appkey": "app-a", "expiration": 3600}
    with pytest.raises(Exception) as caught:
        await asyncio.to_thread(sdk_get_token, gateway.host, body, AK, SK + "x")
    error = json.loads(caught.value.args[0])["ResponseMetadata"]["Error"]
    assert (error["CodeN"], error["Code"]) == (100010, "SignatureDoesNotMatch")


@pytest.mark.parametrize(("expiration", "ttl"), [
    (60, 60), (MAX_TOKEN_TTL, MAX_TOKEN_TTL), (MAX_TOKEN_TTL + 1, MAX_TOKEN_TTL), (10 * MAX_TOKEN_TTL, MAX_TOKEN_TTL),
    (None, DEFAULT_EXPIRATION),
])
async def test_expiration_is_capped_at_one_day(gateway: Gateway, expiration: int | None, ttl: int) -> None:
    status, reply = await post_signed(gateway, token_body(expiration=expiration))
    assert status == 200
    claims = gateway.tokens.verify(reply["token"], "app-a")
    assert claims["exp"] - claims["iat"] == ttl and abs(reply["expires_at"] - (time.time() + ttl)) <= 5


async def test_second_access_key_and_plain_token_version(gateway: Gateway) -> None:
    body = token_body(appkey="app-b", token_version="")
    status, reply = await post_signed(gateway, body, ak=OTHER_AK, sk=OTHER_SK)
    assert status == 200 and gateway.tokens.verify(reply["token"], "app-b")


async def test_extra_query_parameters_are_signed_too(gateway: Gateway) -> None:
    query = {**QUERY, "note": "a b/c+d é"}
    status, reply = await post_signed(gateway, token_body(), query=query)
    assert status == 200 and reply["token"]


async def test_missing_signature(gateway: Gateway) -> None:
    body = token_body()
    response = await gateway.client.post("/?" + urlencode(QUERY), data=body,
                                         headers={"Content-Type": "application/json"})
    await check_error(gateway, (response.status, await response.json()), 401, 100005, "MissingSignature")


async def test_missing_x_date(gateway: Gateway) -> None:
    body = token_body()
    path, headers = signed(gateway.host, body)
    del headers["X-Date"]
    response = await gateway.client.post(path, data=body, headers=headers)
    await check_error(gateway, (response.status, await response.json()), 400, 100004, "MissingRequestInfo")


@pytest.mark.parametrize(("kwargs", "code_n", "code"), [
    ({"ak": "AKLTnobody"}, 100009, "InvalidAccessKey"),
    ({"sk": SK + "x"}, 100010, "SignatureDoesNotMatch"),
    ({"sk": OTHER_SK}, 100010, "SignatureDoesNotMatch"),
    ({"region": "cn-beijing"}, 100010, "SignatureDoesNotMatch"),
    ({"service": "iam"}, 100010, "SignatureDoesNotMatch"),
])
async def test_bad_credentials(gateway: Gateway, kwargs: dict[str, str], code_n: int, code: str) -> None:
    await check_error(gateway, await post_signed(gateway, token_body(), **kwargs), 401, code_n, code)


@pytest.mark.parametrize("tamper", ["body", "query", "host", "content-type"])
async def test_tampered_requests(gateway: Gateway, tamper: str) -> None:
    body = token_body()
    path, headers = signed(gateway.host, body)
    if tamper == "body":
        body = token_body(expiration=MAX_TOKEN_TTL)
    elif tamper == "query":
        path += "&extra=1"
    elif tamper == "host":
        path, headers = signed("sami.example.com", body)  # signed for another host, sent to this one
        headers["Host"] = gateway.host
    else:
        headers["Content-Type"] = "text/plain"
    response = await gateway.client.post(path, data=body, headers=headers)
    await check_error(gateway, (response.status, await response.json()), 401, 100010, "SignatureDoesNotMatch")


@pytest.mark.parametrize("offset", [-(MAX_SKEW_SECONDS + 60), MAX_SKEW_SECONDS + 60])
async def test_stale_or_future_timestamp(gateway: Gateway, sdk_date: Callable[[float], None], offset: int) -> None:
    sdk_date(time.time() + offset)
    answer = await post_signed(gateway, token_body())
    sdk_date(time.time())  # back to the current time for check_error's still-serving request
    await check_error(gateway, answer, 400, 100006, "InvalidTimestamp")


async def test_timestamp_within_the_skew_is_accepted(gateway: Gateway, sdk_date: Callable[[float], None]) -> None:
    sdk_date(time.time() - MAX_SKEW_SECONDS + 30)
    status, _ = await post_signed(gateway, token_body())
    assert status == 200


@pytest.mark.parametrize(("query", "http", "code_n", "code"), [
    ({"Action": "GetTokens", "Version": "2021-07-27"}, 404, 100008, "InvalidActionOrVersion"),
    ({"Action": "GetToken", "Version": "2020-01-01"}, 404, 100008, "InvalidActionOrVersion"),
    ({"Action": "ListUsers", "Version": "2021-07-27"}, 404, 100008, "InvalidActionOrVersion"),
    ({"Version": "2021-07-27"}, 400, 100002, "MissingParameter"),
    ({"Action": "GetToken"}, 400, 100002, "MissingParameter"),
])
async def test_unknown_action_or_version(gateway: Gateway, query: dict[str, str], http: int, code_n: int,
                                         code: str) -> None:
    answer = await post_signed(gateway, token_body(), query=query)
    await check_error(gateway, answer, http, code_n, code, query.get("Action", ""), query.get("Version", ""))


async def test_repeated_action(gateway: Gateway) -> None:
    response = await gateway.client.post("/?Action=GetToken&Action=GetToken&Version=2021-07-27", data=b"{}")
    answer = (response.status, await response.json())
    await check_error(gateway, answer, 404, 100008, "InvalidActionOrVersion", "GetToken")


@pytest.mark.parametrize(("appkey", "ak", "sk"), [
    ("app-b", AK, SK),  # a known appkey, but not this access key's
    ("app-unknown", AK, SK),  # this access key's, but not configured on the gateway
    ("app-a", OTHER_AK, OTHER_SK),
])
async def test_appkey_not_allowed(gateway: Gateway, appkey: str, ak: str, sk: str) -> None:
    answer = await post_signed(gateway, token_body(appkey=appkey), ak=ak, sk=sk)
    message = await check_error(gateway, answer, 403, 100013, "AccessDenied")
    assert appkey in message


@pytest.mark.parametrize(("body", "field"), [
    (token_body(expiration=0), "expiration"),
    (token_body(expiration=-60), "expiration"),
    (token_body(expiration=1.5), "expiration"),
    (token_body(expiration=3600.0), "expiration"),
    (token_body(expiration="3600"), "expiration"),
    (token_body(expiration=True), "expiration"),
    (token_body(appkey=""), "appkey"),
    (token_body(appkey=None), "appkey"),
    (token_body(appkey=["app-a"]), "appkey"),
    (token_body(token_version="volc-auth-v2"), "token_version"),
    (b"{not json", "JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "JSON"),
])
async def test_bad_body(gateway: Gateway, body: bytes, field: str) -> None:
    message = await check_error(gateway, await post_signed(gateway, body), 400, 100004, "MissingRequestInfo")
    assert field in message


async def test_body_size_cap(gateway: Gateway) -> None:
    padded = token_body(padding="x" * MAX_BODY_BYTES)
    message = await check_error(gateway, await post_signed(gateway, padded), 400, 100004, "MissingRequestInfo")
    assert str(MAX_BODY_BYTES) in message
    path, headers = signed(gateway.host, padded)
    response = await gateway.client.post(path, data=io.BytesIO(padded), headers=headers)
    await check_error(gateway, (response.status, await response.json()), 400, 100004, "MissingRequestInfo")

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: the cap applies while reading
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024
    response = await gateway.client.post(path, data=chunks(), headers=headers)
    await check_error(gateway, (response.status, await response.json()), 400, 100004, "MissingRequestInfo")


async def test_body_at_the_cap_is_read(gateway: Gateway) -> None:
    body = token_body()
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    status, reply = await post_signed(gateway, body)
    assert len(body) == MAX_BODY_BYTES and status == 200 and reply["token"]


async def test_internal_error_hides_details(aiohttp_client: Any) -> None:
    gateway = await make_gateway(aiohttp_client, BrokenTokens(TOKEN_SECRET))
    status, reply = await post_signed(gateway, token_body())
    error = reply["ResponseMetadata"]["Error"]
    assert (status, error["CodeN"], error["Code"]) == (500, 100014, "InternalError")
    assert "boom" not in json.dumps(reply)
    status, reply = await post_signed(gateway, token_body(appkey="app-b"))
    assert (status, reply["ResponseMetadata"]["Error"]["CodeN"]) == (403, 100013)  # still answering


async def test_no_secret_or_token_is_logged(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, reply = await post_signed(gateway, token_body())
    assert status == 200
    await post_signed(gateway, token_body(), sk=SK + "x")
    await post_signed(gateway, token_body(appkey="app-b"))
    assert "GetToken" in caplog.text and AK in caplog.text
    for secret in (SK, OTHER_SK, TOKEN_SECRET, reply["token"]):
        assert secret not in caplog.text
