"""Server-Sent Events: lines in, events out (the WHATWG rules the gateway's stream follows)."""

from __future__ import annotations

from .models import JobEvent


class EventDecoder:
    """Feed it the stream's lines (without their line ending); a blank line completes an event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry_ms: int | None = None

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
