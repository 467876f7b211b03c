"""The HTTP surface with a stand-in namespace: every answer is a SAMI envelope."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import body_limit, create_app
from sami_gateway.auth.authenticator import TokenService
from sami_gateway.config import load_config
from sami_gateway.errors import Code, error
from sami_gateway.runtime.namespace import Call, Result, RunReport
from sami_gateway.runtime.scheduler import Scheduler
from sami_gateway.web.state import NAMESPACES

SECRET = "q" * 32
NS = "Echo"
MAX_INPUT = 1000


class Echo:
    """Returns its input; a payload {"fail": ...} raises."""

    name = NS
    needs_input = True
    max_input_bytes = MAX_INPUT

    def __init__(self) -> None:
        self.parsed = 0

    def parse(self, payload: Mapping[str, Any]) -> str:
        self.parsed += 1
        if payload.get("fail") == "client":
            raise error(Code.ILLEGAL_PAYLOAD, "fail")
        return str(payload.get("fail", ""))

    async def start(self, scheduler: Scheduler) -> None: ...

    async def stop(self) -> None: ...

    def load_seconds(self) -> Mapping[str, float]:
        return {"echo-model": 0.25}

    async def run(self, call: Call[str]) -> Result:
        if call.params == "crash":
            raise RuntimeError("secret internal detail")
        if call.params == "slow":
            await asyncio.sleep(5)
        data = bytes(call.data)
        return Result(data, {"size": len(data)}, RunReport("echo", len(data) / 10, {"echo": 0.001}))


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k",
                              "SAMI_MAX_INPUT_BYTES": str(MAX_INPUT), "SAMI_REQUEST_TIMEOUT": "0.5"})
    return await aiohttp_client(create_app(config, {NS: Echo()}))  # type: ignore[dict-item]


def request_body(**overrides: Any) -> dict[str, Any]:
    body = {"appkey": "k", "token": TokenService(SECRET).issue("k", 60), "namespace": NS,
            "data": base64.b64encode(b"hello").decode(), "payload": "{}"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def answer(response: Any) -> tuple[int, dict[str, Any]]:
    assert response.content_type == "application/json"
    return response.status, orjson.loads(await response.read())


async def check(client: TestClient, response: Any, http: int, code: Code) -> dict[str, Any]:
    status, reply = await answer(response)
    assert (status, reply["status_code"]) == (http, code.value.code)
    assert reply["task_id"] and set(reply) >= {"task_id", "namespace", "status_code", "status_text"}
    ok_status, ok = await answer(await client.post("/api/v1/invoke", json=request_body()))
    assert (ok_status, ok["status_code"]) == (200, 20000000)  # still serving
    return reply


async def test_success(client: TestClient) -> None:
    status, reply = await answer(await client.post("/api/v1/invoke", json=request_body()))
    assert status == 200 and base64.b64decode(reply["data"]) == b"hello"
    assert orjson.loads(reply["payload"]) == {"size": 5} and reply["namespace"] == NS


@pytest.mark.parametrize(("overrides", "http", "code"), [
    ({"appkey": "nope"}, 401, Code.INVALID_ACCESS),
    ({"appkey": None}, 401, Code.INVALID_ACCESS),
    ({"token": "abc.def.ghi"}, 401, Code.DENIED_ACCESS),
    ({"token": None}, 401, Code.DENIED_ACCESS),
    ({"namespace": "Nope"}, 400, Code.DENIED_NAMESPACE),
    ({"data": "aGVsbG8"}, 400, Code.INVALID_DATA),
    ({"data": "", "payload": "{}"}, 400, Code.EMPTY_URL),
    ({"data": None, "payload": None}, 400, Code.EMPTY_URL),
    ({"data": base64.b64encode(b"x" * (MAX_INPUT + 1)).decode()}, 400, Code.EXCEEDED_DATA_SIZE),
    ({"payload": "{oops"}, 400, Code.INVALID_PAYLOAD),
    ({"payload": '{"fail": "client"}'}, 400, Code.ILLEGAL_PAYLOAD),
    ({"data": "", "payload": '{"url": 5}'}, 400, Code.ILLEGAL_PAYLOAD),
    ({"data": "", "payload": '{"url": "http://127.0.0.1:1/a.wav"}'}, 400, Code.FAILED_DOWNLOAD),
    ({"data": "", "payload": '{"url": "http://169.254.169.254/latest"}'}, 400, Code.FAILED_DOWNLOAD),
    ({"version": "v9"}, 400, Code.CLIENT_ERROR),
])
async def test_rejections(client: TestClient, overrides: dict[str, Any], http: int, code: Code) -> None:
    reply = await check(client, await client.post("/api/v1/invoke", json=request_body(**overrides)),
                        http, code)
    assert reply["status_text"].startswith(code.value.text)


@pytest.mark.parametrize("overrides", [{"payload": "{oops"}, {"version": "v9"}, {"payload": '{"fail": "client"}'}])
async def test_the_caller_is_authorized_before_the_rest_is_judged(client: TestClient,
                                                                   overrides: dict[str, Any]) -> None:
    """Without a valid token, a bad payload or version is 401 like any other request: who may not
    call learns nothing of what the gateway would make of the rest (with one, they are 400 above)."""
    reply = await check(client, await client.post(
        "/api/v1/invoke", json=request_body(token="abc.def.ghi", **overrides)), 401, Code.DENIED_ACCESS)
    assert reply["status_text"] == "DeniedAccess:IllegalToken"


async def test_query_and_body_conflict(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", params={"appkey": "other"}, json=request_body())
    await check(client, response, 400, Code.CLIENT_ERROR)


async def test_malformed_body(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", data=b"{not json",
                                 headers={"Content-Type": "application/json"})
    await check(client, response, 400, Code.CLIENT_ERROR)


async def test_oversized_body_gets_the_envelope(client: TestClient) -> None:
    limit = body_limit(MAX_INPUT)
    response = await client.post("/api/v1/invoke", data=io.BytesIO(b" " * (limit + 1)))
    await check(client, response, 400, Code.EXCEEDED_DATA_SIZE)

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096
    response = await client.post("/api/v1/invoke", data=chunks())  # no Content-Length
    await check(client, response, 400, Code.EXCEEDED_DATA_SIZE)


async def test_unknown_path_and_method(client: TestClient) -> None:
    await check(client, await client.get("/nope"), 404, Code.NOT_FOUND)
    await check(client, await client.get("/api/v1/invoke"), 405, Code.METHOD_NOT_ALLOWED)


async def test_internal_error_hides_details(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", json=request_body(payload='{"fail": "crash"}'))
    reply = await check(client, response, 500, Code.INTERNAL_ERROR)
    assert "secret" not in reply["status_text"]


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["status"] == "ok"


def test_body_limit_covers_base64_of_the_largest_input() -> None:
    assert body_limit(100 * 1024 * 1024) >= len(base64.b64encode(b"\0" * (100 * 1024 * 1024)))


async def test_deadline_gives_a_504_envelope(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", json=request_body(payload='{"fail": "slow"}'))
    await check(client, response, 504, Code.TIMEOUT)


async def test_query_credentials_are_checked_before_the_body_is_read(client: TestClient) -> None:
    """A bad token in the query is refused even when the body is too large to read."""
    params = {"appkey": "k", "token": "bad", "namespace": NS}
    response = await client.post("/api/v1/invoke", params=params,
                                 data=io.BytesIO(b" " * (body_limit(MAX_INPUT) + 1)))
    await check(client, response, 401, Code.DENIED_ACCESS)


async def test_repeated_query_field(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke?namespace=Echo&namespace=Other", json=request_body())
    await check(client, response, 400, Code.CLIENT_ERROR)


async def test_undecodable_body_encoding(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", data=b"not gzip at all",
                                 headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    await check(client, response, 400, Code.CLIENT_ERROR)


async def test_metrics_count_requests_with_bounded_labels(client: TestClient) -> None:
    await client.post("/api/v1/invoke", json=request_body())
    await client.post("/api/v1/invoke", json=request_body(namespace="Secret-Namespace-Name"))
    text = await (await client.get("/metrics")).text()
    assert 'sami_gateway_requests_total{namespace="Echo",status_code="20000000"} 1.0' in text
    assert 'sami_gateway_requests_total{namespace="unknown",status_code="40200014"} 1.0' in text
    assert "sami_gateway_request_duration_seconds_bucket" in text and "sami_gateway_queue_depth 0.0" in text
    assert "Secret" not in text and "token" not in text


async def test_readyz(client: TestClient) -> None:
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200 and body["status"] == "ready" and body["models_loaded"]


@pytest.mark.parametrize("in_query", [True, False])
async def test_token_verified_and_payload_parsed_once(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                      in_query: bool) -> None:
    """Credentials in the query are checked before the body and not again after it."""
    verified: list[str] = []
    verify = TokenService.verify

    def counting(self: TokenService, token: str, appkey: str) -> dict[str, Any]:
        verified.append(appkey)
        return verify(self, token, appkey)

    monkeypatch.setattr(TokenService, "verify", counting)
    echo = client.app[NAMESPACES][NS]
    assert isinstance(echo, Echo)
    body = request_body(payload='{"x": 1}')
    query = {name: body.pop(name) for name in ("appkey", "token", "namespace")} if in_query else {}
    status, reply = await answer(await client.post("/api/v1/invoke", params=query, json=body))
    assert (status, reply["status_code"]) == (200, 20000000)
    assert verified == ["k"] and echo.parsed == 1


async def test_bad_query_token_is_refused_before_the_body_and_closes(client: TestClient) -> None:
    response = await client.post("/api/v1/invoke", params={"appkey": "k", "token": "bad", "namespace": NS},
                                 json=request_body())
    await check(client, response, 401, Code.DENIED_ACCESS)
    assert response.headers["Connection"] == "close"


async def test_load_times_and_run_reports_reach_the_metrics(client: TestClient) -> None:
    await answer(await client.post("/api/v1/invoke", json=request_body()))
    metrics = await (await client.get("/metrics")).text()
    assert 'sami_gateway_model_load_seconds{model="echo-model"} 0.25' in metrics
    assert 'sami_gateway_audio_seconds_total{model="echo",namespace="Echo"} 0.5' in metrics


async def test_a_large_reply_is_sent_whole(aiohttp_client: Any) -> None:
    big = 3 * 2**20 + 2
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_MAX_INPUT_BYTES": str(big)})
    echo = Echo()
    echo.max_input_bytes = big
    client = await aiohttp_client(create_app(config, {NS: echo}))  # type: ignore[dict-item]
    raw = bytes(range(256)) * (big // 256) + b"xy"
    body = orjson.dumps(request_body(data=base64.b64encode(raw).decode()))
    response = await client.post("/api/v1/invoke", data=io.BytesIO(body), headers={"Content-Type": "application/json"})
    status, reply = await answer(response)
    assert status == 200, reply
    assert base64.b64decode(reply["data"], validate=True) == raw
    assert int(response.headers["Content-Length"]) == len(await response.read())
