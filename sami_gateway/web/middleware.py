"""One place where every failure becomes a SAMI JSON envelope."""

from __future__ import annotations

import logging
import time

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import Code, GatewayError, error
from ..jobs.views import PREFIXES as JOBS_PREFIXES
from ..jobs.views import error_body
from ..protocol.envelope import error_envelope, new_task_id
from .state import CONTEXT, METRICS, RequestContext

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.EXCEEDED_DATA_SIZE,
}


def error_response(context: RequestContext, exc: GatewayError, path: str = "") -> web.Response:
    """The SAMI envelope, or the Jobs API's error JSON on its paths."""
    context.status_code = exc.status.code
    if path.startswith(JOBS_PREFIXES):
        body = orjson.dumps(error_body(context.task_id, exc))
    else:
        body = error_envelope(context.task_id, context.namespace, exc)
    response = web.Response(body=body, status=exc.status.http, content_type="application/json",
                            headers=exc.headers)
    if exc.headers.get("Connection") == "close":
        response.force_close()
    return response


def _from_http(exc: web.HTTPException) -> GatewayError:
    code = _HTTP_CODES.get(exc.status, Code.CLIENT_ERROR if exc.status < 500 else Code.INTERNAL_ERROR)
    kept = {name: exc.headers[name] for name in ("Allow",) if name in exc.headers}  # a 405 must say what is allowed
    return error(code, exc.reason.replace(" ", ""), kept)


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request a task id; turn GatewayError and HTTP errors into envelopes."""
    context = RequestContext(task_id=new_task_id(), namespace=request.query.get("namespace", ""))
    request[CONTEXT] = context
    try:
        return await handler(request)
    except GatewayError as exc:
        request.app[METRICS].refused(exc.code)
        return error_response(context, exc, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(context, _from_http(exc), request.path)
    except Exception:
        log.exception("task %s: unexpected error", context.task_id)
        return error_response(context, error(Code.INTERNAL_ERROR), request.path)


@web.middleware
async def invoke_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times invoke requests (around envelope_errors, so errors are answers here)."""
    if request.path != "/api/v1/invoke":
        return await handler(request)
    metrics = request.app[METRICS]
    started = time.monotonic()
    metrics.in_flight.inc()
    try:
        return await handler(request)
    finally:
        metrics.in_flight.dec()
        context = request[CONTEXT]
        metrics.invoke_answered(context.namespace, context.status_code or Code.INTERNAL_ERROR.value.code,
                                time.monotonic() - started)
