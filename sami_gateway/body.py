"""Reading a request body under a size cap, for every endpoint that takes one."""

from __future__ import annotations

import asyncio

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

READ_CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The body is, or claims to be, larger than the cap."""


class BodyUnreadable(Exception):
    """The body's transfer or content encoding is broken."""


class BodyTimeout(Exception):
    """The body did not arrive in time: a client too slow, or one holding the connection open."""


async def read_capped(request: web.Request, limit: int, timeout: float) -> bytes:
    """The request body, refused as soon as it is known to exceed `limit`, or once `timeout`
    seconds pass before all of it has arrived (a slow client must not hold its slot forever)."""
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge(limit)
    except (HttpProcessingError, ClientPayloadError, RequestPayloadError) as exc:  # bad chunking or encoding
        raise BodyUnreadable(str(exc)) from exc
    except TimeoutError as exc:
        raise BodyTimeout(timeout) from exc
    return bytes(body)
