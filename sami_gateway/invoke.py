"""The `POST /api/v1/invoke` handler: envelope, auth, input, namespace, reply."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from aiohttp import web

from .body import BodyTimeout, BodyTooLarge, BodyUnreadable, read_capped
from .errors import Code, GatewayError, error
from .keys import AUTH, BODY_LIMIT, CONFIG, CONTEXT, FETCHER, METRICS, NAMESPACES, QUOTAS, SCHEDULER
from .namespace import InvokeInput, InvokeOutput, Namespace
from .protocol import InvokeRequest, decode_data, envelope, parse_invoke, reject_repeated
from .scheduler import JobTimeout

CLOSE = {"Connection": "close"}  # the rest of an unread or broken body must not be taken for a request


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body within `limit` and the body timeout, or the envelope's refusal."""
    timeout = request.app[CONFIG].body_timeout
    try:
        return await read_capped(request, limit, timeout)
    except BodyTooLarge as exc:
        raise error(Code.EXCEEDED_DATA_SIZE, f"request body larger than {limit} bytes", CLOSE) from exc
    except BodyUnreadable as exc:
        raise error(Code.CLIENT_ERROR, "body cannot be read", CLOSE) from exc
    except BodyTimeout as exc:
        raise error(Code.BODY_TIMEOUT, f"the body did not arrive within {timeout:g} s", CLOSE) from exc


async def input_bytes(request: web.Request, call: InvokeRequest, namespace: Namespace) -> bytes:
    """`data` decoded, else the download of `payload.url`, within the namespace's size limit."""
    limit = namespace.max_input_bytes
    if call.data_b64:
        if call.data_size > limit:
            raise error(Code.EXCEEDED_DATA_SIZE, f"data larger than {limit} bytes")
        return decode_data(call.data_b64)
    url: Any = call.payload.get("url")
    if url is not None and not isinstance(url, str):
        raise error(Code.ILLEGAL_PAYLOAD, "url must be a string")
    if url:
        return await request.app[FETCHER].fetch(url, limit)
    if namespace.needs_input:
        raise error(Code.EMPTY_URL, "neither data nor payload.url")
    return b""


def record_audio(request: web.Request, namespace: str, log: Mapping[str, Any]) -> None:
    seconds = log.get("input_seconds")
    if isinstance(seconds, int | float):
        metrics = request.app[METRICS]
        metrics.audio.labels(metrics.namespace_label(namespace), str(log.get("model", ""))).inc(seconds)


def authorize_from_query(request: web.Request) -> None:
    """Clients that put credentials in the query (the Go SDK) are checked before the body is read."""
    query = request.query
    if all(query.get(name) for name in ("appkey", "token", "namespace")):
        request.app[AUTH].authorize(query["appkey"], query["token"], query["namespace"])


@contextmanager
def refused_before_body() -> Iterator[None]:
    """Errors raised before the body is read close the connection: the unread body is not a request."""
    try:
        yield
    except GatewayError as exc:
        exc.headers.update(CLOSE)
        raise


async def invoke(request: web.Request) -> web.Response:
    with ExitStack() as stack:
        with refused_before_body():
            reject_repeated(request.query.items())
            authorize_from_query(request)
            stack.enter_context(request.app[SCHEDULER].admission())  # full: refused at once
        return await admitted(request)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow exceptions


async def admitted(request: web.Request) -> web.Response:
    """An admitted request: body, envelope, auth, the appkey's quota, then the namespace."""
    context = request[CONTEXT]
    body = await read_body(request, request.app[BODY_LIMIT])
    call = parse_invoke(context.task_id, request.query, body)
    context.namespace = call.namespace
    request.app[AUTH].authorize(call.appkey, call.token, call.namespace)
    context.appkey = call.appkey
    with request.app[QUOTAS].charge(call.appkey):
        output = await run_namespace(request, call)
    context.status_code = Code.OK.value.code
    context.log.update(output.log)
    record_audio(request, call.namespace, output.log)
    reply = envelope(context.task_id, call.namespace, data=output.data, payload=output.payload)
    return web.Response(body=reply, content_type="application/json")


async def run_namespace(request: web.Request, call: InvokeRequest) -> InvokeOutput:
    """Validate the payload, get the input, run the namespace, all within the request's deadline."""
    namespace = request.app[NAMESPACES][call.namespace]
    namespace.check_payload(call.payload)
    timeout = request.app[CONFIG].request_timeout
    try:
        async with asyncio.timeout(timeout):
            data = await input_bytes(request, call, namespace)
            return await namespace.invoke(InvokeInput(call.task_id, call.appkey, data, call.payload))
    except (TimeoutError, JobTimeout) as exc:
        raise error(Code.TIMEOUT, f"no answer within {timeout:g} s") from exc
