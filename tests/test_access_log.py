"""The request log line: JSON with who, what and how long; never a token."""

from __future__ import annotations

import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sami_gateway.runtime.namespace import RunReport
from sami_gateway.web.access_log import AccessLogger, log_record
from sami_gateway.web.state import CONTEXT, RequestContext


def test_one_json_line_without_query_or_token() -> None:
    request = make_mocked_request("POST", "/api/v1/invoke?appkey=k&token=SECRET.JWT.VALUE&namespace=N")
    request[CONTEXT] = RequestContext("tid", "MusicSourceSeparate", appkey="k", status_code=20000000,
                                      report=RunReport("2track_vocal", 12.5, {"separation": 3.21}))
    record = log_record(request, web.Response(status=200), 0.25)
    line = orjson.dumps(record).decode()
    assert "SECRET" not in line and "token" not in line
    assert record["path"] == "/api/v1/invoke" and record["task_id"] == "tid"
    assert record["model"] == "2track_vocal" and record["input_seconds"] == 12.5
    assert record["separation_seconds"] == 3.21 and record["appkey"] == "k"
    assert record["status_code"] == 20000000 and record["duration_seconds"] == 0.25


def test_a_request_aiohttp_answered_alone_with_400_has_no_access_line(caplog: pytest.LogCaptureFixture) -> None:
    """A request line aiohttp cannot parse never reaches the app (no context): bad_requests logs it, bounded."""
    logger = logging.getLogger("test.access")
    access = AccessLogger(logger, "")
    with caplog.at_level(logging.INFO, logger="test.access"):
        access.log(make_mocked_request("GET", "/"), web.Response(status=400), 0.0)
        assert caplog.records == []
        access.log(make_mocked_request("GET", "/"), web.Response(status=500), 0.0)  # a crash is logged
        answered = make_mocked_request("GET", "/api/v1/jobs/x")
        answered[CONTEXT] = RequestContext("tid")
        access.log(answered, web.Response(status=400), 0.0)  # the app's own 400 is logged
    assert [orjson.loads(record.getMessage())["http_status"] for record in caplog.records] == [500, 400]
