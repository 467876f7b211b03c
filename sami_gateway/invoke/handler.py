"""The `POST /api/v1/invoke` handler: admission, envelope, auth, input, namespace, reply.

Each value is decided once and handed on: the body is read and `data` decoded as it streams in
(`EnvelopeReader`), the envelope parsed once (`parse_invoke`), the caller authorized once (from
the query before the body, else from the body) into an `Authorization` kept on the request's
context, the payload parsed once by the namespace (`Namespace.parse`) and its value handed to
`Namespace.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from aiohttp import web

from ..auth.authenticator import authorize_from_query
from ..errors import Code, GatewayError, error
from ..protocol.envelope import (
    InvokeRequest,
    base64_pieces,
    envelope_parts,
    parse_invoke,
    parse_routing,
    reject_repeated,
)
from ..protocol.reader import EnvelopeReader, ReceivedEnvelope
from ..runtime.namespace import InputBytes, Namespace, Result
from ..web.body import CLOSE, refused_in_envelope, stream_capped
from ..web.state import AUTH, BODY_LIMIT, CONFIG, CONTEXT, METRICS, NAMESPACES, OUTBOUND, QUOTAS, SCHEDULER
from .execute import execute


async def receive_envelope(request: web.Request, limit: int) -> ReceivedEnvelope:
    """The request body within `limit` and the body timeout, `data` decoded as it arrives."""
    timeout = request.app[CONFIG].body_timeout
    reader = EnvelopeReader(request.app[CONFIG].max_input_bytes, request.content_length or 0)
    with refused_in_envelope(limit, timeout):
        await stream_capped(request, limit, timeout, reader.feed)
    return reader.close()


async def input_bytes(request: web.Request, call: InvokeRequest, namespace: Namespace[Any]) -> InputBytes:
    """`data` as decoded, else the download of `payload.url`, within the namespace's size limit."""
    limit = namespace.max_input_bytes
    if call.data is not None:
        if call.data.size > limit:
            raise error(Code.EXCEEDED_DATA_SIZE, f"data larger than {limit} bytes")
        return call.data.value()
    url: Any = call.payload.get("url")
    if url is not None and not isinstance(url, str):
        raise error(Code.ILLEGAL_PAYLOAD, "url must be a string")
    if url:
        return await request.app[OUTBOUND].fetch(url, limit)
    if namespace.needs_input:
        raise error(Code.EMPTY_URL, "neither data nor payload.url")
    return b""


@contextmanager
def refused_before_body() -> Iterator[None]:
    """Errors raised before the body is read close the connection: the unread body is not a request."""
    try:
        yield
    except GatewayError as exc:
        exc.headers.update(CLOSE)
        raise


async def invoke(request: web.Request) -> web.StreamResponse:
    with ExitStack() as stack:
        with refused_before_body():
            reject_repeated(request.query.items())
            # The body may not contradict credentials from the query.
            request[CONTEXT].auth = authorize_from_query(request.query, request.app[AUTH])
            stack.enter_context(request.app[SCHEDULER].admission())  # full: refused at once
        return await admitted(request)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


async def admitted(request: web.Request) -> web.StreamResponse:
    """An admitted request: body, envelope, auth, the appkey's quota, then the namespace."""
    context = request[CONTEXT]
    received = await receive_envelope(request, request.app[BODY_LIMIT])
    routing = parse_routing(request.query, received.fields)
    context.namespace = routing["namespace"]
    # Credentials from the query were verified before the body; the body cannot contradict them.
    # Either way the caller is authorized before anything else of the envelope is judged: someone
    # without a valid token learns nothing of what the gateway would make of the rest.
    auth = context.auth or request.app[AUTH].authorize(routing["appkey"], routing["token"], routing["namespace"])
    context.auth, context.appkey = auth, auth.appkey
    call = parse_invoke(context.task_id, routing, received)
    namespace = request.app[NAMESPACES][auth.namespace]
    async with request.app[QUOTAS].charge(auth.appkey, auth.quota):
        params = namespace.parse(call.payload)
        result = await execute(auth.namespace, namespace, call.task_id, call.appkey, params,
                               input_bytes(request, call, namespace), request.app[CONFIG].request_timeout,
                               request.app[METRICS])
    context.status_code = Code.OK.value.code
    context.report = result.report
    return await reply(request, auth.namespace, result)


async def reply(request: web.Request, namespace: str, result: Result) -> web.StreamResponse:
    """The success envelope, its base64 `data` written a piece at a time: a long result never
    holds the event loop for one encoding of the whole."""
    data = result.data
    head, tail = envelope_parts(request[CONTEXT].task_id, namespace, result.payload, data is not None)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(head) + 4 * -(-len(data or b"") // 3) + len(tail)
    await response.prepare(request)
    try:
        await response.write(head)
        for piece in base64_pieces(data or b""):
            await response.write(piece)  # waits only when the socket's buffer is full:
            await asyncio.sleep(0)  # other requests run between pieces all the same
        await response.write(tail)
        await response.write_eof()
    except ConnectionResetError:  # the client left while its answer was being sent
        pass
    return response
