"""What the Jobs API's handlers share: the service, the caller's authorization, bodies, answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from ...auth.authenticator import Authorization
from ...errors import Code, error
from ...web.body import read_capped, refused_in_envelope
from ...web.state import AUTH, CONFIG, CONTEXT, JOBS
from ..service import JobService

CURSOR_PATTERN = "^[0-9]{0,18}$"  # a job list's cursor: where the previous page ended (empty: the first page)
SECONDS_PER_100_MB = 1.0  # a file's time allowance grows with its size beyond the body timeout
LARGE_JSON_BYTES = 1024 * 1024  # parsed off the event loop above this


def service(request: web.Request) -> JobService:
    return request.app[JOBS]


def authorized(request: web.Request) -> Authorization:
    """The caller's `Authorization: Bearer` token, checked once and kept on the request's context."""
    context = request[CONTEXT]
    if context.auth is None:
        name = service(request).namespace_name
        context.auth = request.app[AUTH].authorize_bearer(request.headers.get("Authorization", ""), name)
        context.appkey, context.namespace = context.auth.appkey, name
    return context.auth


def base_url(request: web.Request) -> str:
    """Where clients reach this gateway: the configured public URL, else the request's origin."""
    configured = service(request).settings.public_url
    return configured or str(request.url.origin())


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def job_response(request: web.Request, job: Any, status: int = 200,
                 headers: dict[str, str] | None = None) -> web.Response:
    return json_response(service(request).render(job, base_url(request)), status, headers)


async def read_json(request: web.Request, limit: int) -> Any:
    """A JSON body within `limit` and the body timeout, parsed off the event loop when large."""
    timeout = request.app[CONFIG].body_timeout
    with refused_in_envelope(limit, timeout):
        body = await read_capped(request, limit, timeout)
    if len(body) > LARGE_JSON_BYTES:
        return await asyncio.to_thread(parse_json, body, "the body")
    return parse_json(body, "the body")


def parse_json(text: bytes, what: str) -> Any:
    """`text` as JSON; 40000020 InvalidPayload when it is not."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise error(Code.INVALID_PAYLOAD, f"{what} is not JSON") from exc


def file_seconds(body_timeout: float, max_bytes: int) -> float:
    """Seconds a client has to send a file of up to `max_bytes` (an upload, a form's file part)."""
    return body_timeout + SECONDS_PER_100_MB * max_bytes / 1e8


def file_timeout(request: web.Request, max_bytes: int) -> float:
    """`file_seconds` with this gateway's body timeout."""
    return file_seconds(request.app[CONFIG].body_timeout, max_bytes)


async def chunks(stream: Any, timeout: float) -> AsyncIterator[bytes]:
    """A body's chunks as they arrive, the whole within `timeout` seconds (TimeoutError after)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        read = stream.readany() if hasattr(stream, "readany") else stream.read_chunk()  # a body or a form part
        chunk = await asyncio.wait_for(read, remaining)
        if not chunk:
            return
        yield chunk
