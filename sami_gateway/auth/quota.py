"""Per-appkey quotas: a token bucket for the request rate, a bound on concurrent requests and one on the
event streams and long polls held open."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from ..config.limits import Quota
from ..errors import Code, error

STREAM_RETRY_AFTER_SECONDS = 5  # a slot frees when one of the appkey's streams or long polls ends: not at once


@dataclass
class _Usage:
    tokens: float
    updated: float
    active: int = 0


class Quotas(Protocol):
    """Where quotas are kept: this process (`QuotaTracker`) or Redis, shared by every front."""

    def charge(self, appkey: str, quota: Quota) -> AbstractAsyncContextManager[None]:
        """Hold one of the appkey's concurrent requests for the duration of the block; 429 past the quota."""


class QuotaTracker:
    """Charges each request to its appkey under the quota its authorization carries; past it:
    429 with Retry-After, other appkeys unaffected. A reloaded quota applies from the next request,
    usage so far kept."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def _take(self, appkey: str, quota: Quota) -> None:
        now = self._clock()
        usage = self._usage.setdefault(appkey, _Usage(float(quota.burst), now))
        usage.tokens = min(float(quota.burst), usage.tokens + (now - usage.updated) * quota.rate)
        usage.updated = now
        if usage.active >= quota.concurrent:
            raise error(Code.QUOTA_EXCEEDED, f"at most {quota.concurrent} concurrent requests",
                        {"Retry-After": "1"})
        if usage.tokens < 1:
            wait = math.ceil((1 - usage.tokens) / quota.rate)
            raise error(Code.QUOTA_EXCEEDED, f"at most {quota.rate:g} requests per second",
                        {"Retry-After": str(max(1, wait))})
        usage.tokens -= 1
        usage.active += 1

    @asynccontextmanager
    async def charge(self, appkey: str, quota: Quota) -> AsyncIterator[None]:
        """Hold one of the appkey's concurrent requests for the duration of the block."""
        with self._lock:
            self._take(appkey, quota)
        try:
            yield
        finally:
            with self._lock:
                self._usage[appkey].active -= 1


class StreamSlots:
    """The event streams and long polls each appkey holds open in this process: past its quota's
    `streams`, 429 with Retry-After; other appkeys unaffected. Each front of a scale-out keeps its own."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def open(self, appkey: str) -> int:
        return self._open.get(appkey, 0)

    @contextmanager
    def hold(self, appkey: str, quota: Quota) -> Iterator[None]:
        """One of the appkey's slots for the duration of the block (the event loop's only: no lock)."""
        held = self._open.get(appkey, 0)
        if held >= quota.streams:
            raise error(Code.QUOTA_EXCEEDED, f"at most {quota.streams} event streams and long polls open at once "
                        "per appkey; close one or wait", {"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)})
        self._open[appkey] = held + 1
        try:
            yield
        finally:
            left = self._open[appkey] - 1
            if left:
                self._open[appkey] = left
            else:
                del self._open[appkey]
