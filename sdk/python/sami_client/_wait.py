"""Waiting for a job by long polling: how long each poll asks for, when to report progress, when to give up."""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import WaitTimeout
from .models import Job

DEFAULT_POLL = 30.0  # seconds one long poll may last (the gateway honours up to 60)
MIN_INTERVAL = 1.0  # between two polls when the gateway answered early (one that ignores `?wait=`)

ProgressCallback = Callable[[Job], object]


class WaitPlan:
    """The state of one `wait`: its deadline, the last job seen, and the progress callback."""

    def __init__(self, job_id: str, timeout: float | None, poll: float,
                 on_progress: ProgressCallback | None) -> None:
        if poll <= 0:
            raise ValueError("poll must be positive")
        self.job_id = job_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.poll = poll
        self.on_progress = on_progress
        self.last: Job | None = None
        self._asked = 0.0
        self._started = 0.0

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def next_poll(self) -> float:
        """Seconds the next long poll asks for; WaitTimeout once the deadline has passed (after one poll)."""
        remaining = self._remaining()
        if remaining is not None and remaining <= 0 and self.last is not None:
            raise WaitTimeout(f"job {self.job_id} is still {self.last.status} after the timeout", self.last)
        self._asked = self.poll if remaining is None else max(1.0, min(self.poll, remaining))
        self._started = time.monotonic()
        return self._asked

    def observe(self, job: Job) -> bool:
        """Report a change of status or progress; True once the job is terminal."""
        changed = self.last is None or (job.status, job.progress) != (self.last.status, self.last.progress)
        self.last = job
        if changed and self.on_progress is not None:
            self.on_progress(job)
        return job.is_terminal

    def pause(self) -> float:
        """Seconds to sleep before the next poll: none after a full long poll, a little after an early answer."""
        elapsed = time.monotonic() - self._started
        if elapsed >= self._asked - 0.5:
            return 0.0
        remaining = self._remaining()
        return max(0.0, min(MIN_INTERVAL, MIN_INTERVAL if remaining is None else remaining))
