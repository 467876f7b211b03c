"""Requests aiohttp cannot parse: no byte of them in the log, and a flood of them costs a few lines."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from aiohttp.http_exceptions import BadHttpMessage, InvalidURLError, LineTooLong

from sami_gateway.web.bad_requests import LINES_PER_MINUTE, WINDOW_SECONDS, MalformedRequestLog, reason
from tests.conftest import APPKEY, free_port, gateway_env, issue_token, wait_healthy

FLOOD = 500


def test_reason_keeps_llhttps_words_and_no_bytes() -> None:
    llhttp = InvalidURLError("Invalid char in url query:\n\n  b'GET /x?token=SECRET\\x01 HTTP/1.1'\n  ^")
    assert reason(llhttp) == "InvalidURLError (Invalid char in url query)"
    assert reason(LineTooLong("SECRET" * 100, 8190)) == "LineTooLong"
    assert reason(BadHttpMessage("Duplicate 'SECRET' header found.")) == "BadHttpMessage"


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_lines_are_counted_then_summed_up_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    logger, clock = logging.getLogger("test.bad_requests"), Clock()
    malformed = MalformedRequestLog(clock)
    malformed.install(logger)
    exc = InvalidURLError("Invalid char in url query:\n\n  b'GET /?token=SECRET\\x01 HTTP/1.1'\n  ^")
    with caplog.at_level(logging.DEBUG, logger="test.bad_requests"):
        for _ in range(LINES_PER_MINUTE + 5):
            logger.error("Error handling request from %s", "192.0.2.1", exc_info=exc)
        assert [r.getMessage() for r in caplog.records] == [
            "malformed request from 192.0.2.1 answered 400: InvalidURLError (Invalid char in url query)"
        ] * LINES_PER_MINUTE
        assert all(r.exc_info is None for r in caplog.records)
        logger.error("Unhandled exception", exc_info=ValueError("kept"))  # not a parse error: untouched
        assert caplog.records[-1].exc_info is not None
        clock.now = WINDOW_SECONDS
        caplog.clear()
        logger.error("Error handling request from %s", "192.0.2.1", exc_info=exc)  # a new window
        assert [r.getMessage() for r in caplog.records] == [
            f"5 more malformed requests were answered 400 and not logged (at most {LINES_PER_MINUTE} lines a minute)",
            "malformed request from 192.0.2.1 answered 400: InvalidURLError (Invalid char in url query)"]
        malformed.remove()
    assert "SECRET" not in caplog.text and not logger.filters


def send(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_live_gateway_logs_no_byte_of_a_bad_request_and_a_flood_costs_a_few_lines(
        model_store: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "gateway.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"],
                                   env=gateway_env(model_store, port), stdout=handle, stderr=handle)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        token = issue_token(APPKEY)
        bad = [f"GET /api/v1/invoke?token={token}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",  # the review's line
               f"GET /api/v1/invoke?appkey={APPKEY}&token={token}&q=querymarker HTTP/1.1\r\n"
               f"Host: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n",  # a bad header after a good query
               f"G\x01T /api/v1/jobs?token={token} HTTP/1.1\r\nHost: x\r\n\r\n",  # a bad method
               f"GET /?token={token} HTTP/1.1\r\nHost: x\r\nX-Long: {token * 300}\r\n\r\n"]  # a line too long
        for raw in bad:
            assert send(port, raw.encode()).startswith(b"HTTP/1.0 400 ")
        assert requests.get(url + "/healthz", timeout=10).status_code == 200
        before = len(log.read_text(errors="replace").splitlines())
        for _ in range(FLOOD):
            send(port, f"GET /?token={token}\x01 HTTP/1.1\r\n\r\n".encode())
        assert requests.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
    text = log.read_text(errors="replace")
    for part in [token, *token.split("."), "token=", "querymarker", "Traceback"]:
        assert part not in text
    lines = [line for line in text.splitlines() if "malformed request" in line]
    assert len(lines) >= 1 and len(text.splitlines()) - before <= 3 * LINES_PER_MINUTE  # not one per bad request
    logged = sum("answered 400: " in line for line in lines)
    not_logged = sum(int(line.split(" more malformed")[0].rsplit(" ", 1)[1]) for line in lines
                     if " more malformed requests" in line)
    debug_only = 1  # aiohttp logs a bad method in a connection's first request at DEBUG (TLS on an HTTP port)
    assert logged + not_logged == len(bad) - debug_only + FLOOD  # each counted, in a line of its own or a sum
