"""The access log: one JSON line per request, never the query string or a token."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .state import CONTEXT, RequestContext


def log_record(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> dict[str, Any]:
    """The fields of one line: who called what, how it ended, how long it took."""
    return record_of(request.method, request.path, response.status, seconds, request.remote, request.get(CONTEXT))


def record_of(method: str, path: str, http_status: int, seconds: float, remote: str | None,
              context: RequestContext | None) -> dict[str, Any]:
    """`log_record` for an answer written without aiohttp's request (see `door`)."""
    record: dict[str, Any] = {"method": method, "path": path, "http_status": http_status,
                              "duration_seconds": round(seconds, 4), "remote": remote}
    if context is not None:
        record.update(task_id=context.task_id, appkey=context.appkey, namespace=context.namespace,
                      status_code=context.status_code)
        if context.report is not None:
            report = context.report
            record.update(model=report.model, input_seconds=round(report.input_seconds, 3),
                          **{f"{stage}_seconds": round(seconds, 3) for stage, seconds in report.stage_seconds.items()})
    return record


class AccessLogger(AbstractAccessLogger):
    """Writes `log_record` as one JSON line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.get(CONTEXT) is None and response.status == 400:
            return  # aiohttp could not parse it and answered alone: bad_requests logs it, at a bounded rate
        self.logger.info(orjson.dumps(log_record(request, response, time)).decode())
