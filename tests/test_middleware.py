"""The middleware: every failure as a SAMI envelope (envelope_errors), rejections counted, invoke_metrics."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sami_gateway.errors import Code, error
from sami_gateway.runtime.metrics import Metrics
from sami_gateway.web.middleware import envelope_errors, invoke_metrics
from sami_gateway.web.state import CONTEXT, METRICS

NS = "Echo"
INVOKE = "/api/v1/invoke"
SECRET_TEXT = "database password is hunter2"


async def ok(request: web.Request) -> web.Response:
    context = request[CONTEXT]
    context.status_code = Code.OK.value.code
    in_flight = request.app[METRICS].registry.get_sample_value("sami_gateway_in_flight_requests")
    return web.json_response({"task_id": context.task_id, "namespace": context.namespace, "in_flight": in_flight})


async def fail(request: web.Request) -> web.Response:
    """Raises the GatewayError named by `?code=`, with a Retry-After header and `?close=1` a Connection: close."""
    headers = {"Retry-After": "7"}
    if request.query.get("close"):
        headers["Connection"] = "close"
    raise error(Code[request.query["code"]], "some detail", headers)


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError(SECRET_TEXT)


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


async def read_all(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    app = web.Application(middlewares=[invoke_metrics, envelope_errors], client_max_size=100)  # as app.py has them
    app[METRICS] = Metrics([NS])
    app.router.add_post(INVOKE, ok)
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_post("/api/v1/fail", fail)
    app.router.add_get("/crash", crash)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/forbidden", forbidden)
    app.router.add_post("/read", read_all)
    return await aiohttp_client(app)


def metrics(client: TestClient) -> Metrics:
    return client.app[METRICS]  # type: ignore[index]


async def check(client: TestClient, response: Any, http: int, code: Code, text: str | None = None,
                namespace: str = "") -> dict[str, Any]:
    """The SAMI error envelope with this status; the app still answers the next request."""
    assert response.status == http and response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert set(body) == {"task_id", "namespace", "status_code", "status_text"}
    assert uuid.UUID(body["task_id"]) and body["namespace"] == namespace
    assert body["status_code"] == code.value.code
    assert body["status_text"] == (code.value.text if text is None else text)
    following = await client.get("/ok")
    assert following.status == 200
    return body


async def test_a_handler_sees_its_context_and_its_answer_passes_through(client: TestClient) -> None:
    first = await (await client.get("/ok", params={"namespace": NS})).json()
    second = await (await client.get("/ok")).json()
    assert first["namespace"] == NS and second["namespace"] == ""
    assert uuid.UUID(first["task_id"]) != uuid.UUID(second["task_id"])


@pytest.mark.parametrize("code", [Code.INVALID_DATA, Code.DENIED_ACCESS, Code.DENIED_NAMESPACE, Code.QUOTA_EXCEEDED,
                                  Code.OVERLOADED, Code.TIMEOUT])
async def test_gateway_error_becomes_its_envelope_with_its_headers(client: TestClient, code: Code) -> None:
    response = await client.get("/fail", params={"code": code.name, "namespace": NS})
    assert response.headers["Retry-After"] == "7"
    assert response.headers.get("Connection", "keep-alive").lower() != "close"
    await check(client, response, code.value.http, code, f"{code.value.text}:some detail", NS)


async def test_connection_close_header_closes_the_connection(client: TestClient) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET /fail?code=EXCEEDED_DATA_SIZE&close=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")  # the second request is never answered
        answer = await asyncio.wait_for(reader.read(), 10)  # returns only once the server closes
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"\r\nConnection: close" in head
    assert b'"status_code":40000016' in body and answer.count(b"HTTP/1.1 ") == 1
    assert (await client.get("/ok")).status == 200


@pytest.mark.parametrize(("method", "path", "http", "code", "text"), [
    ("GET", "/nowhere", 404, Code.NOT_FOUND, "NotFound:NotFound"),
    ("POST", "/ok", 405, Code.METHOD_NOT_ALLOWED, "MethodNotAllowed:MethodNotAllowed"),
    ("GET", "/forbidden", 400, Code.CLIENT_ERROR, "ClientError:Forbidden"),
])
async def test_aiohttp_http_errors_become_envelopes(client: TestClient, method: str, path: str, http: int, code: Code,
                                                    text: str) -> None:
    response = await client.request(method, path, params={"namespace": NS})
    await check(client, response, http, code, text, NS)


async def test_a_405_says_what_is_allowed(client: TestClient) -> None:
    response = await client.post("/ok")
    assert response.status == 405 and "GET" in response.headers["Allow"]


async def test_body_over_client_max_size_is_exceeded_data_size(client: TestClient) -> None:
    response = await client.post("/read", data=b"x" * 101)
    await check(client, response, 400, Code.EXCEEDED_DATA_SIZE, "ExceededDataSize:RequestEntityTooLarge")
    assert (await (await client.post("/read", data=b"x" * 100)).read()) == b"x" * 100


async def test_a_redirect_passes_through(client: TestClient) -> None:
    response = await client.get("/redirect", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (302, "/elsewhere")


async def test_unexpected_exception_is_500_without_its_text(client: TestClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="sami_gateway.web.middleware")
    response = await client.get("/crash", params={"namespace": NS})
    raw = await response.text()
    body = await check(client, response, 500, Code.INTERNAL_ERROR, namespace=NS)
    assert "hunter2" not in raw and "RuntimeError" not in raw
    assert f"task {body['task_id']}: unexpected error" in caplog.text and SECRET_TEXT in caplog.text


async def test_rejections_are_counted_by_reason(client: TestClient) -> None:
    for code in (Code.OVERLOADED, Code.OVERLOADED, Code.UNAVAILABLE, Code.TIMEOUT, Code.QUOTA_EXCEEDED,
                 Code.STORAGE_QUOTA_EXCEEDED, Code.INVALID_DATA, Code.DENIED_ACCESS):
        await client.get("/fail", params={"code": code.name})
    await client.get("/crash")
    registry = metrics(client).registry
    counted = {sample.labels["reason"]: sample.value for family in registry.collect()
               if family.name == "sami_gateway_rejections" for sample in family.samples
               if sample.name.endswith("_total")}
    assert counted == {"overloaded": 2.0, "shutting_down": 1.0, "timeout": 1.0, "quota": 1.0,
                       "storage_quota": 1.0}


async def test_invoke_metrics_count_only_invoke_requests(client: TestClient) -> None:
    answer = await (await client.post(INVOKE, params={"namespace": NS})).json()
    assert answer["in_flight"] == 1.0  # counted while it runs
    await client.post(INVOKE, params={"namespace": "Secret-Namespace"})
    await client.get("/ok", params={"namespace": NS})
    await client.get("/fail", params={"code": "OVERLOADED", "namespace": NS})
    await client.post("/api/v1/fail", params={"code": "OVERLOADED", "namespace": NS})
    registry = metrics(client).registry
    requests = {(s.labels["namespace"], s.labels["status_code"]): s.value for family in registry.collect()
                if family.name == "sami_gateway_requests" for s in family.samples if s.name.endswith("_total")}
    assert requests == {(NS, "20000000"): 1.0, ("unknown", "20000000"): 1.0}
    seconds = "sami_gateway_request_duration_seconds_count"
    assert registry.get_sample_value(seconds, {"namespace": NS}) == 1.0
    assert registry.get_sample_value(seconds, {"namespace": "unknown"}) == 1.0
    assert registry.get_sample_value("sami_gateway_in_flight_requests") == 0.0


async def test_invoke_metrics_count_an_error_by_its_status_code(aiohttp_client: Any) -> None:
    async def refuse(request: web.Request) -> web.Response:
        raise error(Code.OVERLOADED)

    async def crash_invoke(request: web.Request) -> web.Response:
        raise ValueError("boom")

    for handler, code in ((refuse, Code.OVERLOADED), (crash_invoke, Code.INTERNAL_ERROR)):
        app = web.Application(middlewares=[invoke_metrics, envelope_errors])
        app[METRICS] = Metrics([NS])
        app.router.add_post(INVOKE, handler)
        client = await aiohttp_client(app)
        response = await client.post(INVOKE, params={"namespace": NS})
        assert response.status == code.value.http
        labels = {"namespace": NS, "status_code": str(code.value.code)}
        assert app[METRICS].registry.get_sample_value("sami_gateway_requests_total", labels) == 1.0
        assert app[METRICS].registry.get_sample_value("sami_gateway_in_flight_requests") == 0.0

