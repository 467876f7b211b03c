"""Reading a request body under a cap and a deadline: stream_capped and read_capped behind a real aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.test_utils import TestClient

from sami_gateway.web.body import (
    READ_CHUNK_BYTES,
    BodyTimeout,
    BodyTooLarge,
    BodyUnreadable,
    read_capped,
    stream_capped,
)

LIMIT = 1000
SLOW = 0.3  # seconds the handlers give a body; a test that stalls waits no longer than this
PATIENT = 30.0  # a deadline no test reaches
CLIENT_WAIT = 10.0  # how long a raw client waits for an answer: less than PATIENT


class Sink:
    """What the handler saw: the chunks handed to the sink, in order, and how it ended."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.outcome = ""


def make_app(sink: Sink, limit: int = LIMIT, timeout: float = PATIENT) -> web.Application:
    async def answer(request: web.Request, read: Any) -> web.Response:
        try:
            body = await read(request)
        except BodyTooLarge as exc:
            return refuse(413, f"too large {exc.args[0]}")
        except BodyTimeout as exc:
            return refuse(408, f"timeout {exc.args[0]}")
        except BodyUnreadable as exc:
            return refuse(400, f"unreadable: {exc}")
        sink.outcome = "read"
        return web.Response(body=body)

    def refuse(status: int, outcome: str) -> web.Response:
        """As the gateway refuses a body: the rest of it must not be taken for a request."""
        sink.outcome = outcome
        response = web.Response(status=status, text=outcome)
        response.force_close()
        return response

    async def stream(request: web.Request) -> web.Response:
        async def read(request: web.Request) -> bytes:
            await stream_capped(request, limit, timeout, sink.chunks.append)
            return b"".join(sink.chunks)
        return await answer(request, read)

    async def whole(request: web.Request) -> web.Response:
        return await answer(request, lambda request: read_capped(request, limit, timeout))

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_post("/stream", stream)
    app.router.add_post("/whole", whole)
    app.router.add_get("/ping", ping)
    return app


async def raw_exchange(client: TestClient, request: bytes, *, then: bytes = b"") -> bytes:
    """Send `request` on a fresh connection, then (without closing) `then`; the status line answered."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        if then:
            await asyncio.sleep(0.05)
            writer.write(then)
            await writer.drain()
        return await asyncio.wait_for(reader.readline(), CLIENT_WAIT)
    finally:
        writer.close()


async def still_answers(client: TestClient) -> None:
    response = await client.get("/ping")
    assert (response.status, await response.text()) == (200, "pong")


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0.01)


async def test_read_capped_returns_the_whole_body_up_to_the_cap(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(Sink()))
    for body in (b"", b"x", bytes(range(256)) * 3 + b"y" * (LIMIT - 768)):
        response = await client.post("/whole", data=body)
        assert (response.status, await response.read()) == (200, body)


async def test_chunks_reach_the_sink_in_order(aiohttp_client: Any) -> None:
    sink = Sink()
    limit = 4 * READ_CHUNK_BYTES
    client = await aiohttp_client(make_app(sink, limit=limit))
    parts = [bytes([n]) * (READ_CHUNK_BYTES // 2 + 1) for n in range(1, 7)]  # chunked, 3 chunks of 64 KiB and more
    response = await client.post("/stream", data=pieces(*parts))
    body = b"".join(parts)
    assert (response.status, await response.read(), sink.outcome) == (200, body, "read")
    assert b"".join(sink.chunks) == body
    assert len(sink.chunks) > 1 and all(0 < len(chunk) <= READ_CHUNK_BYTES for chunk in sink.chunks)


async def test_content_length_over_the_cap_is_refused_before_reading(aiohttp_client: Any) -> None:
    sink = Sink()
    client = await aiohttp_client(make_app(sink))
    # Only the headers are sent: a server that waited for the body would not answer before PATIENT.
    head = f"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
    status_line = await raw_exchange(client, head)
    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert (sink.outcome, sink.chunks) == (f"too large {LIMIT}", [])
    await still_answers(client)


async def test_content_length_at_the_cap_is_read(aiohttp_client: Any) -> None:
    sink = Sink()
    client = await aiohttp_client(make_app(sink))
    response = await client.post("/stream", data=b"z" * LIMIT)
    assert (response.status, len(await response.read()), sink.outcome) == (200, LIMIT, "read")


async def test_chunked_body_over_the_cap_is_refused_while_streaming(aiohttp_client: Any) -> None:
    sink = Sink()
    client = await aiohttp_client(make_app(sink))
    response = await client.post("/stream", data=pieces(b"a" * 600, b"b" * 600, b"c" * 600))
    assert (response.status, await response.text()) == (413, f"too large {LIMIT}")
    assert sum(map(len, sink.chunks)) <= LIMIT  # the chunk that crossed the cap never reached the sink
    await still_answers(client)


async def test_read_capped_refuses_a_chunked_body_over_the_cap(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(Sink()))
    response = await client.post("/whole", data=pieces(b"a" * LIMIT, b"b"))
    assert response.status == 413


async def test_a_body_that_stalls_times_out(aiohttp_client: Any) -> None:
    sink = Sink()
    client = await aiohttp_client(make_app(sink, timeout=SLOW))
    head = b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    started = asyncio.get_running_loop().time()
    status_line = await raw_exchange(client, head, then=b"abc")  # 3 of 10 bytes, then nothing
    elapsed = asyncio.get_running_loop().time() - started
    assert status_line.startswith(b"HTTP/1.1 408 ")
    assert sink.outcome == f"timeout {SLOW}" and b"".join(sink.chunks) == b"abc"
    assert SLOW <= elapsed < CLIENT_WAIT
    await still_answers(client)


@pytest.mark.parametrize("tail", [b"3\r\nabc\r\nzz\r\n", b"3\r\nabcXY\r\n"])
async def test_broken_chunked_encoding_is_unreadable(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch,
                                                     tail: bytes) -> None:
    """With aiohttp's pure-Python parser the chunking error reaches the body's reader."""
    monkeypatch.setattr(web_protocol, "HttpRequestParser", HttpRequestParserPy)
    sink = Sink()
    client = await aiohttp_client(make_app(sink))
    head = b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status_line = await raw_exchange(client, head, then=tail)
    assert status_line.startswith(b"HTTP/1.1 400 ")
    assert sink.outcome.startswith("unreadable: ") and b"".join(sink.chunks) == b"abc"
    await still_answers(client)


async def test_broken_chunked_encoding_is_bounded_by_the_deadline(aiohttp_client: Any) -> None:
    """aiohttp's C parser keeps a chunking error from the body's reader: the deadline still ends the wait."""
    sink = Sink()
    client = await aiohttp_client(make_app(sink, timeout=SLOW))
    head = b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status_line = await raw_exchange(client, head, then=b"3\r\nabc\r\nzz\r\n")
    assert status_line.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 408 "))
    assert sink.outcome == f"timeout {SLOW}" or sink.outcome.startswith("unreadable: ")
    await still_answers(client)


async def test_broken_content_encoding_is_unreadable(aiohttp_client: Any) -> None:
    sink = Sink()
    client = await aiohttp_client(make_app(sink))
    response = await client.post("/whole", data=b"this is not gzip at all", headers={"Content-Encoding": "gzip"})
    assert response.status == 400
    assert sink.outcome.startswith("unreadable: ") and "gzip" in sink.outcome
    await still_answers(client)
