"""The listening sockets, accepted from a batch at a time.

uvloop's own server takes one connection per turn of the event loop. When the admitted requests'
bodies make each turn long (24 arriving at full speed: about 10 ms a turn), a burst of 72 new
connections waited 72 turns to be accepted, most of a second for the last, however soon its
answer was ready. Here one turn takes every connection waiting, up to ACCEPT_BATCH, as asyncio's
own event loop does, and hands each to the loop as an accepted socket; a first look at the socket
(`ConnectionGuard.first_look`) may serve it there and then.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

ACCEPT_BATCH = 128  # connections taken in one turn: a burst at once, a flood a bounded slice at a time
ACCEPT_RETRY_SECONDS = 1.0  # out of descriptors or memory: the socket stays readable, so stop watching it this long
_OUT_OF_ROOM = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets on every address `host` resolves to, as
    `loop.create_server` binds them (address reuse; IPv6 sockets take IPv6 only)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


FirstLook = Callable[[socket.socket], asyncio.Protocol | None]  # see Listener


def serve_as_usual(sock: socket.socket) -> asyncio.Protocol | None:
    return None


class Listener:
    """Accepts connections on `sockets` and serves each with a protocol from `protocol_factory`,
    unless `first_look`, shown the socket as it is accepted, returns the protocol that serves it."""

    def __init__(self, sockets: list[socket.socket], protocol_factory: Callable[[], asyncio.Protocol],
                 first_look: FirstLook = serve_as_usual) -> None:
        self.sockets = sockets
        self._factory = protocol_factory
        self._first_look = first_look
        self._loop = asyncio.get_running_loop()
        self._opening: set[asyncio.Task[object]] = set()
        self._closed = False
        for sock in sockets:
            self._watch(sock)

    def close(self) -> None:
        """Stop accepting and close the sockets; connections already accepted go on."""
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _watch(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # none left waiting
            except OSError as exc:
                if exc.errno not in _OUT_OF_ROOM:
                    raise  # the loop logs it
                log.warning("cannot accept connections (%s): trying again in %g s", exc, ACCEPT_RETRY_SECONDS)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._watch, sock)
                return
            connection.setblocking(False)
            looked = self._first_look(connection)
            factory = self._factory if looked is None else _given(looked)
            task = self._loop.create_task(self._loop.connect_accepted_socket(factory, connection))
            self._opening.add(task)
            task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[object]) -> None:
        self._opening.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("a connection could not be opened: %r", exc)


def _given(protocol: asyncio.Protocol) -> Callable[[], asyncio.Protocol]:
    return lambda: protocol
