"""The access log: one line per request, never the query string (it carries tokens)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .keys import CONTEXT


class AccessLogger(AbstractAccessLogger):
    """Logs the path without the query, the status, the time and the task id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        context = request.get(CONTEXT)
        self.logger.info("%s %s %s %d %.3fs task_id=%s", request.remote, request.method, request.path,
                         response.status, time, context.task_id if context else "-")
