"""The listening sockets on uvloop: a burst of connections is taken in one turn of the loop, however long the turn."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Coroutine
from typing import Any, cast

import pytest
import uvloop

from sami_gateway.web import listener as listener_module
from sami_gateway.web.listener import Listener, listening_sockets

TURN_SECONDS = 0.02  # each turn of the loop is held this long, as admitted bodies arriving at full speed hold it
BURST = 50


OPEN: list[Upper] = []


class Upper(asyncio.Protocol):
    """Notes when it was made (the connection accepted) and answers each piece in capitals."""

    def __init__(self, accepted: list[float]) -> None:
        accepted.append(time.monotonic())
        self.transport: asyncio.Transport | None = None
        OPEN.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data.upper())


def on_uvloop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on a fresh uvloop, closing the connections it served before the loop."""
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        for protocol in OPEN:
            if protocol.transport is not None:
                protocol.transport.close()
        OPEN.clear()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()


async def long_turns(stop: asyncio.Event) -> None:
    while not stop.is_set():
        time.sleep(TURN_SECONDS)
        await asyncio.sleep(0)


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0)


def test_a_burst_is_accepted_in_one_turn_however_long_the_turn() -> None:
    async def burst() -> float:
        accepted: list[float] = []
        listener = Listener(listening_sockets("127.0.0.1", 0, 1024), lambda: Upper(accepted))
        port = listener.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        busy = asyncio.create_task(long_turns(stop))
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]  # the kernel completes them
        try:
            await until(lambda: len(accepted) == BURST)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"still served")
            assert await reader.readexactly(12) == b"STILL SERVED"
            writer.close()
            await until(lambda: all(protocol.transport is not None for protocol in OPEN))
        finally:
            stop.set()
            await busy
            listener.close()
            for client in clients:
                client.close()
        return max(accepted) - min(accepted)

    spread = on_uvloop(burst())
    assert spread < 3 * TURN_SECONDS, spread  # one connection a turn, as uvloop's own server takes them: 1 s


def test_a_closed_listener_takes_no_more_connections() -> None:
    async def closed() -> None:
        listener = Listener(listening_sockets("127.0.0.1", 0, 16), lambda: Upper([]))
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)

    on_uvloop(closed())


class OutOfDescriptors:
    """A listening socket whose first accept fails as a process out of file descriptors does."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.failed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()

    def close(self) -> None:
        self.sock.close()


def test_out_of_descriptors_it_stops_accepting_for_a_while_then_goes_on(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(listener_module, "ACCEPT_RETRY_SECONDS", 0.2)

    async def out_of_room() -> float:
        accepted: list[float] = []
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        failing = OutOfDescriptors(sock)
        listener = Listener([failing], lambda: Upper(accepted))  # type: ignore[list-item]
        client = socket.create_connection(sock.getsockname())
        started = time.monotonic()
        try:
            await until(lambda: bool(accepted) and OPEN[0].transport is not None)
        finally:
            listener.close()
            client.close()
        return accepted[0] - started

    waited = on_uvloop(out_of_room())
    assert waited >= 0.15 and "cannot accept connections" in caplog.text


def test_a_connection_served_at_first_look_does_not_reach_the_factory() -> None:
    async def looked() -> tuple[list[float], Upper]:
        made: list[float] = []
        served = Upper([])
        listener = Listener(listening_sockets("127.0.0.1", 0, 16), lambda: Upper(made), lambda sock: served)
        reader, writer = await asyncio.open_connection(*listener.sockets[0].getsockname())
        try:
            writer.write(b"seen first")
            assert await reader.readexactly(10) == b"SEEN FIRST"
        finally:
            writer.close()
            listener.close()
        return made, served

    made, served = on_uvloop(looked())
    assert made == [] and served.transport is not None
