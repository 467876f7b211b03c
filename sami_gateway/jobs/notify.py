"""Telling waiters that a job changed: long polls and event streams wake on it, not on a timer."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class JobEvents:
    """A version number per job, bumped on each change; `wait` returns when it moves."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = defaultdict(int)
        self._changed: dict[str, asyncio.Event] = {}

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    def publish(self, job_id: str) -> None:
        """The job changed (called on the event loop)."""
        self._versions[job_id] += 1
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    async def wait(self, job_id: str, seen: int, timeout: float) -> bool:
        """True once the job's version is past `seen`, False after `timeout` seconds."""
        if self.version(job_id) != seen:
            return True
        event = self._changed.setdefault(job_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return self.version(job_id) != seen
        return True

    def forget(self, job_id: str) -> None:
        """The job is gone: wake its waiters and drop its version."""
        self.publish(job_id)
        self._versions.pop(job_id, None)
