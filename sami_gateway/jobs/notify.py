"""Telling waiters that a job changed: long polls and event streams wake on it, not on a timer."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

MAX_VERSIONS = 100_000  # versions kept; the oldest go first (a waiter then sees a change and reads again)


class JobEvents:
    """A version number per job, bumped on each change; `wait` returns when it moves."""

    def __init__(self) -> None:
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._changed: dict[str, asyncio.Event] = {}

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    def publish(self, job_id: str) -> None:
        """The job changed (called on the event loop)."""
        self._versions[job_id] = self._versions.pop(job_id, 0) + 1
        if len(self._versions) > MAX_VERSIONS:
            self._versions.popitem(last=False)
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Changes may have been missed (a lost subscription): every waiter reads its job again."""
        for job_id in list(self._changed):
            self.publish(job_id)

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
