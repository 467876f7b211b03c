"""The access log: one JSON line per request, never the query string or a token."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .keys import CONTEXT


def log_record(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> dict[str, Any]:
    """The fields of one line: who called what, how it ended, how long it took."""
    record: dict[str, Any] = {"method": request.method, "path": request.path, "http_status": response.status,
                              "duration_seconds": round(seconds, 4), "remote": request.remote}
    context = request.get(CONTEXT)
    if context is not None:
        record.update(task_id=context.task_id, appkey=context.appkey, namespace=context.namespace,
                      status_code=context.status_code, **context.log)
    return record


class AccessLogger(AbstractAccessLogger):
    """Writes `log_record` as one JSON line."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(orjson.dumps(log_record(request, response, time)).decode())
