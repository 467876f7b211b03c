"""The request log line: JSON with who, what and how long; never a token."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sami_gateway.access_log import log_record
from sami_gateway.namespace import RunReport
from sami_gateway.state import CONTEXT, RequestContext


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
