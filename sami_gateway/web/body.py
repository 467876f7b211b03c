"""Reading a request body under a size cap and a deadline, whole or chunk by chunk as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..errors import Code, error

READ_CHUNK_BYTES = 64 * 1024
CLOSE = {"Connection": "close"}  # the rest of an unread or broken body must not be taken for a request


class BodyTooLarge(Exception):
    """The body is, or claims to be, larger than the cap."""


class BodyUnreadable(Exception):
    """The body's transfer or content encoding is broken."""


class BodyTimeout(Exception):
    """The body did not arrive in time: a client too slow, or one holding the connection open."""


async def stream_capped(request: web.Request, limit: int, timeout: float, sink: Callable[[bytes], None]) -> None:
    """Hand the request body to `sink` chunk by chunk as it arrives, refused as soon as it is known
    to exceed `limit`, or once `timeout` seconds pass before all of it has arrived (a slow client
    must not hold its slot forever). The event loop runs other requests between chunks."""
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(limit)
    received = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                sink(chunk)
                await asyncio.sleep(0)  # chunks already buffered would otherwise run back to back
    except (HttpProcessingError, ClientPayloadError, RequestPayloadError) as exc:  # bad chunking or encoding
        raise BodyUnreadable(str(exc)) from exc
    except TimeoutError as exc:
        raise BodyTimeout(timeout) from exc


@contextmanager
def refused_in_envelope(limit: int, timeout: float) -> Iterator[None]:
    """A body that could not be read, answered in the SAMI envelope (invoke and the Jobs API alike),
    closing the connection."""
    try:
        yield
    except BodyTooLarge as exc:
        raise error(Code.EXCEEDED_DATA_SIZE, f"request body larger than {limit} bytes", dict(CLOSE)) from exc
    except BodyUnreadable as exc:
        raise error(Code.CLIENT_ERROR, "body cannot be read", dict(CLOSE)) from exc
    except BodyTimeout as exc:
        raise error(Code.BODY_TIMEOUT, f"the body did not arrive within {timeout:g} s", dict(CLOSE)) from exc


async def read_capped(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole request body, within `limit` and `timeout` (see `stream_capped`)."""
    body = bytearray()
    await stream_capped(request, limit, timeout, body.extend)
    return bytes(body)
