"""Invokes refused from their head alone: the handler's answer, and nothing the handler would answer otherwise."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.auth.authenticator import TokenService
from sami_gateway.config import load_config
from sami_gateway.web.door import Door
from sami_gateway.web.state import METRICS, SCHEDULER
from tests.test_app import NS, SECRET, Echo

PEER = "192.0.2.7"


def build_app() -> web.Application:
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_MAX_JOBS": "1"})
    return create_app(config, {NS: Echo()})  # type: ignore[dict-item]


@pytest.fixture
def full() -> Iterator[web.Application]:
    """An app whose one request slot is taken."""
    app = build_app()
    with app[SCHEDULER].admission():
        yield app


def head(target: str = "/api/v1/invoke", method: str = "POST", version: str = "HTTP/1.1",
         fields: bytes = b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n") -> bytes:
    return f"{method} {target} {version}\r\n".encode() + fields + b"\r\n"


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    raw_head, body = answer.split(b"\r\n\r\n", 1)
    status_line, *lines = raw_head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, orjson.loads(body)


def metric(app: web.Application, name: str, **labels: str) -> float:
    return app[METRICS].registry.get_sample_value(name, labels) or 0.0


def test_an_invoke_past_the_bound_is_refused_from_its_head(full: web.Application) -> None:
    answer = Door(full)(head(f"/api/v1/invoke?namespace={NS}"), PEER)
    assert answer is not None
    status, headers, reply = parse(answer)
    assert status == 503 and reply["status_code"] == 50300001 and reply["namespace"] == NS
    assert reply["status_text"].startswith("ServerOverloaded:1 requests")
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert int(headers["retry-after"]) >= 1 and "date" in headers and len(reply["task_id"]) == 36
    assert metric(full, "sami_gateway_rejections_total", reason="overloaded") == 1
    assert metric(full, "sami_gateway_requests_total", namespace=NS, status_code="50300001") == 1
    assert metric(full, "sami_gateway_request_duration_seconds_count", namespace=NS) == 1


def test_with_room_in_the_bound_the_request_goes_on() -> None:
    assert Door(build_app())(head(), PEER) is None


def test_shutting_down_is_refused_as_the_handler_refuses_it() -> None:
    app = build_app()
    app[SCHEDULER].stop_admitting()
    answer = Door(app)(head(), PEER)
    assert answer is not None
    status, headers, reply = parse(answer)
    assert (status, reply["status_code"], headers["retry-after"]) == (503, 50300002, "5")


@pytest.mark.parametrize("query", ["appkey=k&appkey=j", f"appkey=k&token=forged&namespace={NS}",
                                   "appkey=unknown&token=t&namespace=Echo", "appkey=k&token=t&namespace=Nope"])
def test_what_the_handler_answers_before_admission_is_left_to_it(full: web.Application, query: str) -> None:
    assert Door(full)(head(f"/api/v1/invoke?{query}"), PEER) is None


def test_good_credentials_in_the_query_are_refused_at_the_door(full: web.Application) -> None:
    token = TokenService(SECRET).issue("k", 60)
    answer = Door(full)(head(f"/api/v1/invoke?appkey=k&token={token}&namespace={NS}"), PEER)
    assert answer is not None and parse(answer)[2]["status_code"] == 50300001


@pytest.mark.parametrize("request_head", [
    head(method="GET"), head(method="post"), head("/api/v1/invokes"), head("/api/v1/invoke/x"),
    head("/api/v1/%69nvoke"), head("http://x/api/v1/invoke"), head("/api/v1/jobs"), head(version="HTTP/2.0"),
    head(fields=b"Host: x\r\nNot a field\r\n"), head(fields=b"Host: x\r\n continued\r\n"),
    b"POST /api/v1/invoke HTTP/1.1\nHost: x\n\n", b"POST /api/v1/invoke HTTP/1.1\r\nHost: x\r\n",
])
def test_anything_but_a_plain_invoke_head_goes_on_to_aiohttp(full: web.Application, request_head: bytes) -> None:
    assert Door(full)(request_head, PEER) is None


def test_the_access_log_line_is_the_handlers(full: web.Application, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        answer = Door(full)(head(f"/api/v1/invoke?namespace={NS}&token=secret"), PEER)
    assert answer is not None
    line = json.loads(caplog.records[-1].getMessage())
    assert line == {"method": "POST", "path": "/api/v1/invoke", "http_status": 503, "remote": PEER,
                    "duration_seconds": line["duration_seconds"], "task_id": parse(answer)[2]["task_id"],
                    "appkey": "", "namespace": NS, "status_code": 50300001}


async def test_the_answer_is_the_one_the_handler_gives(aiohttp_client: Any) -> None:
    app = build_app()
    client: TestClient = await aiohttp_client(app)
    with app[SCHEDULER].admission():
        handled = await client.post(f"/api/v1/invoke?namespace={NS}", data=b"{}")
        at_door = Door(app)(head(f"/api/v1/invoke?namespace={NS}"), PEER)
    assert at_door is not None
    status, headers, reply = parse(at_door)
    expected = await handled.json()
    assert (status, headers["retry-after"], headers["content-type"]) == (
        handled.status, handled.headers["Retry-After"], handled.content_type)
    assert {**reply, "task_id": ""} == {**expected, "task_id": ""}
    assert handled.headers["Connection"] == "close"
