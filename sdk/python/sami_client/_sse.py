"""Server-Sent Events: lines in, events out (the WHATWG rules the gateway's stream follows)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from .models import JobEvent

_LINE_END = re.compile("\r\n|\r|\n")


class LineReader:
    """The stream's text in any pieces, its lines out: SSE ends a line at CR, LF or CRLF and nowhere
    else. (`str.splitlines` and httpx's `iter_lines` also split at U+2028, U+0085 and others, which
    JSON carries unescaped inside a job's name or metadata.)"""

    def __init__(self) -> None:
        self._partial = ""
        self._after_cr = False  # the last piece ended with CR: an LF opening the next one belongs to it

    def feed(self, text: str) -> Iterator[str]:
        if not text:
            return
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._partial + text)
        self._partial = lines.pop()
        yield from lines


class EventDecoder:
    """Feed it the stream's lines (without their line ending); a blank line completes an event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self._lines = LineReader()

    def feed_text(self, text: str) -> Iterator[JobEvent]:
        """The events a piece of the stream's text completes."""
        for line in self._lines.feed(text):
            event = self.feed(line)
            if event is not None:
                yield event

    def feed(self, line: str) -> JobEvent | None:
        """The event this line completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment: keep-alive
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> JobEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        return JobEvent.parse(event, "\n".join(data), self.last_id)
