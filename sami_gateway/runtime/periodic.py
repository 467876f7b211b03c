"""Work that runs in the background until stopped: one long-running coroutine (`Background`: a
subscription, webhook delivery), or a round repeated every so often (`Periodic`: sweeps, gauges,
the work loop's rounds)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)
JITTER = 0.2  # each wait is drawn within ±20 % of the period: processes started together drift apart
Round = Callable[[], Awaitable[object]]


class Background:
    """One coroutine function run in a task of its own from `start`, cancelled and awaited by `stop`."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Periodic:
    """Runs `round_` every `every` seconds in a task of its own. A failure never ends it: `failed`
    (when given) decides how long to pause before the next round, else it is logged."""

    def __init__(self, name: str, round_: Round, every: float, *, first_wait: bool = False,
                 failed: Callable[[Exception], float] | None = None) -> None:
        self.name = name
        self.every = every
        self._round = round_
        self._first_wait = first_wait
        self._failed = failed
        self._task = Background(name, self._forever)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _forever(self) -> None:
        if self._first_wait:
            await self._wait()
        while True:
            try:
                await self._round()
            except Exception as exc:  # noqa: BLE001 - one failed round must not end the next ones
                if self._failed is None:
                    log.exception("%s failed; trying again", self.name)
                else:
                    await asyncio.sleep(self._failed(exc))
            await self._wait()

    async def _wait(self) -> None:
        await asyncio.sleep(self.every * random.uniform(1 - JITTER, 1 + JITTER))
