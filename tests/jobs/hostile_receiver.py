"""What the fault tests share: a receiver whose reply is huge or trickles in, and a process's memory
figures (its RSS now, its peak since a reset) read from /proc."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HUGE_REPLY_BYTES = 1536 * 1024 * 1024  # what a hostile receiver offers to send
RSS_BOUND_BYTES = 100 * 1024 * 1024  # how far such a reply may lift a process's peak RSS above the same work's
STEADY_BYTES = 8 * 1024 * 1024  # a warm-up round whose peak rises less than this above the earlier ones' is steady
WARM_ROUNDS = 8
REPLY_SECONDS = 60  # the most one answer keeps sending: a reader of the whole reply would still be reading


def memory(pid: int, field_name: str) -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field_name}")


def reset_peak(pid: int) -> int:
    """Start measuring the peak RSS afresh (Linux's clear_refs 5); the RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory(pid, "VmRSS")


def warm_up(pid: int, one_round: Callable[[], object]) -> int:
    """Run `one_round` (the work a measurement runs, without the fault) until its peak RSS stops rising
    (twice in a row); that peak, which the measurement compares with. Each round is measured from a
    reset: the first runs of each appkey and thread grow the allocator's arenas, and between runs the
    allocator hands memory back, so the RSS before a run says little about the peak the run reaches."""
    peak = steady = 0
    for _ in range(WARM_ROUNDS):
        reset_peak(pid)
        one_round()
        top = memory(pid, "VmHWM")
        steady = steady + 1 if top < peak + STEADY_BYTES else 0
        peak = max(peak, top)
        if steady == 2:
            return peak
    raise AssertionError(f"the peak RSS still rose after {WARM_ROUNDS} warm-up rounds")


@dataclass
class Replier:
    """A raw HTTP server whose answers are 200 with a huge body, sent fast or a byte at a time."""

    url: str = ""
    trickle: bool = False
    requests: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # body bytes each answer got out before the peer left


def _read_request(conn: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return ""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    chunked = any(line.lower().startswith("transfer-encoding:") and "chunked" in line.lower() for line in lines)
    while (len(body) < length) if not chunked else not body.endswith(b"0\r\n\r\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0]


def _answer(replier: Replier, conn: socket.socket) -> None:
    deadline = time.monotonic() + REPLY_SECONDS
    sent = 0
    with conn:
        line = _read_request(conn)
        replier.requests.append(line)
        try:
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {HUGE_REPLY_BYTES}\r\n\r\n".encode())
            block = b"\0" * (1 if replier.trickle else 1024 * 1024)
            while sent < HUGE_REPLY_BYTES and time.monotonic() < deadline:
                conn.sendall(block)
                sent += len(block)
                if replier.trickle:
                    time.sleep(0.5)
        except OSError:
            pass
        replier.sent.append(sent)


@contextmanager
def replier(trickle: bool = False) -> Iterator[Replier]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen = Replier(f"http://127.0.0.1:{server.getsockname()[1]}", trickle)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_answer, args=(seen, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
        server.close()
