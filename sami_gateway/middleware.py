"""One place where every failure becomes a SAMI JSON envelope."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import Code, GatewayError, error
from .keys import CONTEXT, RequestContext
from .protocol import error_envelope, new_task_id

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.EXCEEDED_DATA_SIZE,
}


def error_response(context: RequestContext, exc: GatewayError) -> web.Response:
    response = web.Response(body=error_envelope(context.task_id, context.namespace, exc),
                            status=exc.status.http, content_type="application/json",
                            headers=exc.headers)
    if exc.headers.get("Connection") == "close":
        response.force_close()
    return response


def _from_http(exc: web.HTTPException) -> GatewayError:
    code = _HTTP_CODES.get(exc.status, Code.CLIENT_ERROR if exc.status < 500 else Code.INTERNAL_ERROR)
    return error(code, exc.reason.replace(" ", ""))


@web.middleware
async def envelope_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request a task id; turn GatewayError and HTTP errors into envelopes."""
    context = RequestContext(task_id=new_task_id(), namespace=request.query.get("namespace", ""))
    request[CONTEXT] = context
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(context, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(context, _from_http(exc))
    except Exception:
        log.exception("task %s: unexpected error", context.task_id)
        return error_response(context, error(Code.INTERNAL_ERROR))
