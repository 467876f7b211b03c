"""Requests aiohttp cannot parse: logged without their bytes (a token may be among them), at a bounded rate."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

LINES_PER_MINUTE = 10  # enough to see a broken client at work; a flood of bad lines from anyone cannot fill the log
WINDOW_SECONDS = 60.0
# llhttp's messages are "<fixed reason>:\n\n  b'<the bytes>'": only the reason is kept, never the bytes
_LLHTTP_REASON = re.compile(r"([A-Za-z][A-Za-z ]{0,79}):\n\n  b['\"]")


def reason(exc: HttpProcessingError) -> str:
    """What was wrong, in words that carry none of the request's bytes."""
    found = _LLHTTP_REASON.match(exc.message)
    return type(exc).__name__ + (f" ({found.group(1)})" if found else "")


class MalformedRequestLog(logging.Filter):
    """A filter for aiohttp's server logger: its records of a request it could not parse lose the
    traceback (which quotes the request line or header) for a one-line reason, and past
    `LINES_PER_MINUTE` in a window they are counted, not logged; `flush` logs how many were not."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._window_start = clock()
        self._logged = 0
        self._suppressed = 0
        self._logger: logging.Logger | None = None

    def install(self, logger: logging.Logger) -> None:
        self._logger = logger
        logger.addFilter(self)

    def remove(self) -> None:
        """Log the count of lines not logged, and stop filtering."""
        if self._logger is not None:
            self.flush()
            self._logger.removeFilter(self)
            self._logger = None

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if self._clock() - self._window_start >= WINDOW_SECONDS:
            self.flush()
        if self._logged >= LINES_PER_MINUTE:
            self._suppressed += 1
            return False
        self._logged += 1
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "malformed request from %s answered 400: %s", (remote, reason(exc))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    def flush(self) -> None:
        """Start a new window; if lines were not logged in this one, say how many (one line)."""
        suppressed, self._suppressed = self._suppressed, 0
        self._window_start, self._logged = self._clock(), 0
        if suppressed and self._logger is not None:
            self._logger.warning("%d more malformed requests were answered 400 and not logged (at most %d lines "
                                 "a minute)", suppressed, LINES_PER_MINUTE)
