"""Error answers of every shape the gateway uses become SamiError subclasses with the same fields."""

from __future__ import annotations

import json
import socket

import pytest
from sami_client import (
    BadRequest,
    Conflict,
    NotFound,
    QuotaExceeded,
    SamiClient,
    SamiError,
    ServerError,
    Unauthorized,
    Unavailable,
)
from sami_client.errors import error_from_answer, parse_retry_after

from .fake_gateway import Answer, FakeGateway, error_answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jobs_error(code: int, text: str, message: str = "m") -> bytes:
    return json.dumps({"error": {"status_code": code, "status_text": text, "message": message},
                       "request_id": "req-9"}).encode()


@pytest.mark.parametrize(("http", "code", "text", "kind"), [
    (400, 40000022, "IllegalPayload", BadRequest),
    (401, 40200002, "DeniedAccess", Unauthorized),
    (404, 40400002, "NotFound", NotFound),
    (409, 40900001, "Conflict", Conflict),
    (429, 42900001, "QuotaExceeded", QuotaExceeded),
    (503, 50300001, "ServerOverloaded", Unavailable),
    (500, 50000001, "InternalError", ServerError),
])
def test_the_jobs_api_error_json(http: int, code: int, text: str, kind: type[SamiError]) -> None:
    error = error_from_answer(http, jobs_error(code, text, "why"), {"retry-after": "7"})
    assert type(error) is kind
    assert (error.http_status, error.status_code, error.status_text, error.message, error.request_id) == \
        (http, code, text, "why", "req-9")
    assert error.retry_after == 7.0 and str(code) in str(error) and "req-9" in str(error)


def test_the_sami_envelope_error() -> None:
    body = json.dumps({"task_id": "t-5", "namespace": "MusicSourceSeparate", "status_code": 40000012,
                       "status_text": "IllegalData:not audio", "data": "", "payload": ""}).encode()
    error = error_from_answer(400, body, {})
    assert isinstance(error, BadRequest)
    assert (error.status_code, error.status_text, error.message, error.request_id) == \
        (40000012, "IllegalData:not audio", "not audio", "t-5")


def test_an_answer_that_is_not_the_gateways_json() -> None:
    error = error_from_answer(502, b"<html>Bad Gateway</html>", {}, "Bad Gateway")
    assert isinstance(error, ServerError)
    assert (error.http_status, error.status_code, error.status_text) == (502, 0, "Bad Gateway")
    assert "Bad Gateway" in error.message


def test_retry_after_as_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_errors_over_http(fake: FakeGateway, client: SamiClient) -> None:
    with pytest.raises(NotFound) as missing:
        client.get("nope")
    assert (missing.value.status_code, missing.value.request_id) == (40400002, "req-1")
    fake.add_job("job-1", "processing")
    with pytest.raises(Conflict):
        client.download_result("job-1", "vocals", "unused.wav")
    fake.script[("GET", "/api/v1/jobs/job-1")].append(Answer(504, b"<html>504 Gateway Time-out</html>"))
    with pytest.raises(ServerError) as timeout:
        client.get("job-1")
    assert timeout.value.http_status == 504


def test_invoke_envelope_errors_over_http(fake: FakeGateway) -> None:
    with SamiClient(fake.url, "bad-token") as client, pytest.raises(Unauthorized) as denied:
        client.invoke("app", data=b"x")
    assert denied.value.status_text == "DeniedAccess:IllegalToken" and denied.value.request_id == "t-1"
    fake.script[("POST", "/api/v1/invoke")].append(error_answer(429, 42900001, "QuotaExceeded", "later"))
    with SamiClient(fake.url, "t") as client, pytest.raises(QuotaExceeded):
        client.invoke("app", data=b"x")
