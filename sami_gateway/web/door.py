"""Invokes refused from their head alone, as it arrives, before aiohttp takes the request.

While the admission bound is full, the admitted requests' bodies keep the event loop busy: each
turn of the loop gives every one of them a chunk to decode. A request that goes through aiohttp's
handling takes two more turns (aiohttp's task for the connection, then the handler's) and about
half a millisecond of the loop before it is refused. A connection's first header block comes here
instead, in the callback that receives it: an invoke that the handler would refuse at admission
(503: bound full, or shutting down) is answered at once, in about 50 us, with the envelope,
headers, metrics and access-log line that the handler would have given it. Anything else, or
anything the door is not sure of, goes on to aiohttp unchanged: a request that the handler would
answer otherwise (a repeated routing field, bad credentials in the query) is never answered here.
"""

from __future__ import annotations

import logging
import re
import time
from email.utils import formatdate

import orjson
from aiohttp import web
from aiohttp.log import access_logger
from yarl import URL

from ..auth.authenticator import authorize_from_query
from ..errors import GatewayError
from ..protocol.envelope import error_envelope, new_task_id, reject_repeated
from .access_log import record_of
from .connections import raw_response
from .state import AUTH, METRICS, SCHEDULER, RequestContext

INVOKE_PATH = "/api/v1/invoke"
# The request line and header fields as every client writes them (no obs-fold, CRLF only);
# anything else is aiohttp's to judge.
_REQUEST_LINE = re.compile(rb"POST (/api/v1/invoke)(?:\?([!-~]*))? HTTP/1\.[01]\r\n")
_FIELDS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~\x80-\xff]*\r\n)*\r\n")


class Door:
    """Called with a connection's first header block; the raw answer to an invoke refused at
    admission, or None to hand the request to aiohttp."""

    def __init__(self, app: web.Application) -> None:
        self._scheduler = app[SCHEDULER]
        self._auth = app[AUTH]
        self._metrics = app[METRICS]

    def __call__(self, head: bytes, peer: str | None) -> bytes | None:
        started = time.monotonic()
        refused = self._scheduler.refusal()
        if refused is None:
            return None
        line = _REQUEST_LINE.match(head)
        if line is None or _FIELDS.match(head, line.end()) is None:
            return None
        query = URL.build(path=INVOKE_PATH, query_string=(line[2] or b"").decode("ascii"), encoded=True).query
        try:  # the handler answers these before admission
            reject_repeated(query.items())
            authorize_from_query(query, self._auth)
        except GatewayError:
            return None
        context = RequestContext(new_task_id(), query.get("namespace", ""), status_code=refused.status.code)
        answer = raw_response(refused.status.http, {**refused.headers, "Date": formatdate(usegmt=True)},
                              error_envelope(context.task_id, context.namespace, refused))
        seconds = time.monotonic() - started
        self._metrics.refused(refused.code)
        self._metrics.invoke_answered(context.namespace, context.status_code, seconds)
        if access_logger.isEnabledFor(logging.INFO):
            record = record_of("POST", INVOKE_PATH, refused.status.http, seconds, peer, context)
            access_logger.info(orjson.dumps(record).decode())
        return answer
