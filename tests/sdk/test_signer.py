"""The SDK's V4 signer against the gateway's own verifier, the documented vector, and GetToken over HTTP."""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from sami_client import AsyncSamiClient, SamiClient, Unauthorized, sign_request

from sami_gateway.auth.authenticator import TokenService
from sami_gateway.auth.signature import SignatureError, SignedRequest, verify
from sami_gateway.config.access_keys import parse_access_keys
from sami_gateway.gettoken import GetTokenService, add_gettoken_routes

AK, SK = "AKLTsdkTestKey", "sdkTestSecretKey/with+chars=="
TOKEN_SECRET = "s" * 32


def verified(method: str, url: str, body: bytes, headers: dict[str, str], secret: str = SK,
             now: float | None = None) -> str:
    """The access key the gateway's verifier accepts for this request, as it would receive it."""
    parts = urlsplit(url)
    request = SignedRequest(method, parts.path or "/", parts.query, {k.lower(): v for k, v in headers.items()}, body)
    return verify(request, lambda key: secret if key == AK else None, time.time() if now is None else now,
                  region="cn-north-1", service="sami")


def test_the_documented_vector() -> None:
    body = b'{"token_version":"volc-auth-v1","appkey":"demo_appkey","expiration":3600}'
    now = calendar.timegm(time.strptime("20240102T030405Z", "%Y%m%dT%H%M%SZ"))
    headers = sign_request("POST", "https://open.volcengineapi.com/?Action=GetToken&Version=2021-07-27", body,
                           "AKLTexampleAccessKeyId", "exampleSecretAccessKey==", now=now)
    assert headers["X-Content-Sha256"] == "b525aac00d6b472a2e0766357ed2240717145b148ecefd340d268092bae8ad8d"
    assert headers["Authorization"].endswith(
        "SignedHeaders=content-type;host;x-content-sha256;x-date, "
        "Signature=3afd24de67c0f1770e4e4e9d8b8d5729cd2843406cd379aa5d9811b74cc2ea71")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/?Action=GetToken&Version=2021-07-27",
    "https://gateway.example:443/?Version=2021-07-27&Action=GetToken",
    "http://localhost/some%20path/x~y?b=2&a=1&a=0&space=a+b&odd=%2F%3D",
    "http://[::1]:9000/",
])
def test_the_gateway_verifies_what_the_sdk_signs(url: str) -> None:
    body = json.dumps({"appkey": "a", "expiration": 60}).encode()
    headers = sign_request("POST", url, body, AK, SK)
    assert verified("POST", url, body, headers) == AK


def test_the_gateway_refuses_a_changed_request_or_another_secret() -> None:
    url, body = "http://127.0.0.1:8080/?Action=GetToken&Version=2021-07-27", b'{"appkey":"a"}'
    headers = sign_request("POST", url, body, AK, SK)
    with pytest.raises(SignatureError):
        verified("POST", url, b'{"appkey":"b"}', headers)
    with pytest.raises(SignatureError):
        verified("POST", url.replace("2021", "2022"), body, headers)
    with pytest.raises(SignatureError):
        verified("POST", url, body, headers, secret="another")
    stale = sign_request("POST", url, body, AK, SK, now=time.time() - 3600)
    with pytest.raises(SignatureError):
        verified("POST", url, body, stale)


@pytest.fixture
async def gettoken_url(aiohttp_server: Any) -> str:
    """The gateway's own GetToken route (its real service), on loopback."""
    app = web.Application()
    tokens = TokenService(TOKEN_SECRET)
    add_gettoken_routes(app, GetTokenService(parse_access_keys(f"{AK}:{SK}:app-a"), tokens, {"app-a"}))
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_get_token_through_the_gateways_gettoken(gettoken_url: str) -> None:
    async with AsyncSamiClient(gettoken_url) as client:
        token = await client.get_token(AK, SK, "app-a", expiration=120)
        assert client.token == token and TokenService(TOKEN_SECRET).verify(token, "app-a")["sub"] == "app-a"

    def blocking() -> str:
        with SamiClient(gettoken_url) as sync_client:
            sync_client.get_token(AK, SK, "app-a")
            return str(sync_client.token)

    assert TokenService(TOKEN_SECRET).verify(await asyncio.to_thread(blocking), "app-a")["sub"] == "app-a"


async def test_get_token_refusals_are_sami_errors(gettoken_url: str) -> None:
    async with AsyncSamiClient(gettoken_url) as client:
        with pytest.raises(Unauthorized) as refused:
            await client.get_token(AK, "wrong-secret", "app-a")
        assert (refused.value.http_status, refused.value.status_code) == (401, 100010)
        assert refused.value.status_text == "SignatureDoesNotMatch" and refused.value.request_id
        assert client.token is None
