"""Connection limits: how many may be open, and how long a client has to send a request's headers."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from contextlib import suppress
from http import HTTPStatus
from typing import cast

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage

from ..errors import Code, error
from ..protocol.envelope import error_envelope, new_task_id

log = logging.getLogger(__name__)

REFUSAL_LINGER_SECONDS = 1.0  # a refused client gets this long to read the 503 before its socket is closed
HEAD_BUFFER_BYTES = 64 * 1024  # past this, aiohttp's parser takes the first request early and applies its limits
FIRST_LOOK_BYTES = 8 * 1024  # peeked at as a connection is accepted; a longer head waits for the usual way


Door = Callable[[bytes, str | None], bytes | None]  # (a first request's head, the peer's address) -> an answer


def raw_response(status: int, headers: Mapping[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 response with a JSON body, as written without aiohttp; the connection closes after it."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items() if name.lower() != "connection")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def refusal() -> bytes:
    """The raw HTTP/1.1 503 a connection past the bound gets: the SAMI envelope, then close."""
    body = error_envelope(new_task_id(), "", error(Code.OVERLOADED, "too many open connections"))
    return raw_response(503, {"Retry-After": "1"}, body)


def no_door(head: bytes, peer: str | None) -> bytes | None:
    return None


class ConnectionGuard:
    """Bounds the open connections of an aiohttp `web.Server` and the time each request's headers may take.

    Call the guard as the protocol factory of `loop.create_server` (or a `Listener`'s). It hooks
    the server's request factory (called once a request's headers are parsed) and request handler
    (which returns once the response is decided), so create it before the first connection.
    A connection's first header block goes to `door` before aiohttp (see `first_look` for one
    already in when the connection is accepted): the answer it returns, if any, is written at
    once and the connection closed.
    """

    def __init__(self, server: web.Server, *, header_timeout: float, max_connections: int,
                 on_refuse: Callable[[], None] = lambda: None, door: Door = no_door) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.door = door
        self._server = server
        self._on_refuse = on_refuse
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._waiting: set[_Connection] = set()  # admitted, their first header block not complete yet
        self._live: dict[web.RequestHandler, _Connection] = {}  # handed to aiohttp
        make_request, handle = server.request_factory, server.request_handler

        def request_factory(message: RawRequestMessage, payload: StreamReader, protocol: web.RequestHandler,
                            writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
            request = make_request(message, payload, protocol, writer, task)
            if (connection := self._live.get(protocol)) is not None:
                connection.headers_complete(request.content)
            return request

        async def request_handler(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await handle(request)
            finally:
                if (connection := self._live.get(request.protocol)) is not None:
                    connection.request_done()

        server.request_factory = request_factory
        server.request_handler = request_handler

    @property
    def open(self) -> int:
        """Connections being served now (refused ones are not counted)."""
        return len(self._waiting) + len(self._live)

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def first_look(self, sock: socket.socket) -> asyncio.Protocol | None:
        """A connection just accepted whose first header block is already in (a client writes its
        request as it connects) is shown to the door at once, two turns of the loop before its
        protocol could show it. Returns the protocol that finishes a connection the door answered,
        or None: serve it as usual (the head is only peeked at)."""
        try:
            head = sock.recv(FIRST_LOOK_BYTES, socket.MSG_PEEK)
            peer = sock.getpeername()
        except OSError:
            return None
        end = head.find(b"\r\n\r\n")
        answer = self.door(head[:end + 4], peer[0] if isinstance(peer, tuple) else None) if end >= 0 else None
        if answer is None:
            return None
        try:
            sent = sock.send(answer)
        except BlockingIOError:
            sent = 0
        except OSError:  # the client has gone
            return _Answered(b"")
        if sent == len(answer):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # half-close, so the client reads the 503 rather than a reset
        return _Answered(answer[sent:])

    def close(self) -> None:
        """At shutdown, after the listener: close the connections whose first request has not arrived."""
        self._closing = True
        for connection in list(self._waiting):
            connection.close()

    def _admit(self, connection: _Connection) -> bool:
        if self._closing or self.open >= self.max_connections:
            self._on_refuse()
            return False
        self._waiting.add(connection)
        return True

    def _hand_off(self, connection: _Connection) -> web.RequestHandler:
        handler = self._server()
        self._waiting.discard(connection)
        self._live[handler] = connection
        return handler

    def _release(self, connection: _Connection, handler: web.RequestHandler | None) -> None:
        self._waiting.discard(connection)
        if handler is not None:
            self._live.pop(handler, None)


class _Answered(asyncio.Protocol):
    """A connection the door answered as it was accepted: the rest of the answer if the socket did
    not take it all, then half-closed; what the client still sends is dropped until it is closed."""

    def __init__(self, unsent: bytes) -> None:
        self._unsent = unsent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        if self._unsent:
            stream.write(self._unsent)
            if stream.can_write_eof():
                stream.write_eof()
        asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, stream.close)

    def data_received(self, data: bytes) -> None:
        pass


class _Connection(asyncio.Protocol):
    """One client connection: a header timer in front of aiohttp's RequestHandler, or a refusal.

    The RequestHandler is made once the first request's header block has arrived, so a client
    that never finishes one costs a buffer and a timer. The timer runs from the connection's
    start, and from the first byte after a request's body, until that request's headers are
    parsed; when it fires the connection is closed.
    """

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._admitted = False
        self._handler: web.RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()  # the first request's bytes, until its header block is complete
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the last request's body; None before the first request
        self._busy = False  # a request's handler is running
        self._pending = False  # bytes of the next request came while the handler ran

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._admitted = self._guard._admit(self)
        if not self._admitted:
            self._refuse(self._transport)
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            if self._admitted:
                self._gather_head(data)
            return  # refused: what the client sends is dropped
        between_requests = self._body is None or self._body.is_eof()
        self._handler.data_received(data)
        if between_requests and self._timer is None:
            if self._busy:
                self._pending = True
            else:
                self._arm()

    def eof_received(self) -> None:
        if self._handler is not None:
            self._handler.eof_received()  # returns None, as this does: the transport then closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._guard._release(self, self._handler)
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def headers_complete(self, body: StreamReader) -> None:
        self._disarm()
        self._body, self._busy, self._pending = body, True, False

    def request_done(self) -> None:
        self._busy = False
        if self._pending and self._timer is None:
            self._arm()  # the next request started while this one ran: its headers are timed from now

    def _gather_head(self, data: bytes) -> None:
        scanned = max(0, len(self._head) - 2)
        self._head += data
        ended = self._head.find(b"\n\n", scanned) >= 0 or self._head.find(b"\n\r\n", scanned) >= 0
        if ended or len(self._head) > HEAD_BUFFER_BYTES:
            assert self._transport is not None
            head, self._head = bytes(self._head), bytearray()
            peer = self._transport.get_extra_info("peername")
            answer = self._guard.door(head, peer[0] if isinstance(peer, tuple) else None) if ended else None
            if answer is not None:
                self._answer_at_door(answer)
                return
            self._handler = self._guard._hand_off(self)
            self._handler.connection_made(self._transport)
            self._handler.data_received(head)

    def _arm(self) -> None:
        self._timer = self._guard._loop.call_later(self._guard.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        if self._transport.get_write_buffer_size():
            self._arm()  # a response is still going out: the client is not the one keeping us waiting
            return
        log.debug("closing a connection whose request headers took over %.1f s", self._guard.header_timeout)
        if self._handler is not None:
            self._handler.force_close()
        else:
            self._transport.close()

    def _answer_at_door(self, answer: bytes) -> None:
        """The door answered the first request: what else the client sends is dropped, and the
        connection no longer counts as open."""
        assert self._transport is not None
        self._disarm()
        self._admitted = False
        self._guard._release(self, None)
        self._refuse(self._transport, answer)

    def _refuse(self, transport: asyncio.Transport, answer: bytes | None = None) -> None:
        transport.write(refusal() if answer is None else answer)
        if transport.can_write_eof():
            transport.write_eof()  # half-close, so the client reads the 503 rather than a reset
        self._timer = self._guard._loop.call_later(REFUSAL_LINGER_SECONDS, transport.close)
