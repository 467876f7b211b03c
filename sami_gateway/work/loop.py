"""The one worker loop, over either work queue: take, run, renew, reclaim, hand back.

It takes work class by class up to a capacity each, runs every piece in a task of its own,
renews the lease of what it holds every quarter lease, reclaims what lapsed every half lease
(failing what used its last attempt, each item on its own), and on `stop` hands back what it
could not finish. A handler per kind of work says what running one piece, or failing it after
its last allowed run, means: the single process runs jobs over the SQLite queue, a scale-out
worker invokes and jobs over Redis; the loop never knows which back-end it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Protocol

from ..errors import Code, GatewayError, error, store_trouble
from ..runtime.metrics import Metrics
from ..runtime.periodic import Periodic, Round
from .queue import CLASSES, Work, WorkQueue

log = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0  # a loop with nothing to do looks again this often, or when woken
OUTAGE_PAUSE_SECONDS = 1.0  # a round that met the queue or the store away waits this long before the next


class WorkHandler(Protocol):
    """What one kind of work means."""

    async def run(self, work: Work) -> None:
        """Run taken work to its end; an exception leaves it held until its lease lapses (it runs again)."""

    async def exhausted(self, work: Work, failure: GatewayError) -> None:
        """Fail work whose last allowed run was cut short."""


def exhausted_failure(work: Work) -> GatewayError:
    return error(Code.INTERNAL_ERROR, f"its worker stopped answering; {work.attempt} runs were cut short")


class WorkLoop:
    """Runs the work of `queue` with `handlers` (by kind), at most `capacity[cls]` pieces of each class."""

    def __init__(self, queue: WorkQueue, handlers: Mapping[str, WorkHandler], capacity: Mapping[str, int],
                 max_attempts: int, metrics: Metrics) -> None:
        self.queue = queue
        self.capacity = dict(capacity)
        self.held: dict[str, tuple[Work, asyncio.Task[None]]] = {}  # entry -> (work, its task)
        self.taking = False
        self._handlers = dict(handlers)
        self._max_attempts = max_attempts
        self._metrics = metrics
        self._dropped: set[str] = set()  # entries cancelled on purpose (finished, not retried)
        self._wake = asyncio.Event()
        self._outage_at = -math.inf  # when a round last met the queue or the store away (monotonic)
        self._rounds: list[Periodic] = [
            Periodic(self._take_round.__name__, self._take_round, 0.0, failed=self._failed),
            Periodic(self._lease_round.__name__, self._lease_round, queue.lease / 4, failed=self._failed),
            Periodic(self._reclaim_round.__name__, self._reclaim_round, queue.lease / 2, failed=self._failed)]

    # -- lifetime ----------------------------------------------------------------------------

    def add_round(self, round_: Round, every: float) -> None:
        """Another round to repeat while the loop runs (gauges), with the same care for failures."""
        self._rounds.append(Periodic(getattr(round_, "__name__", "round"), round_, every, failed=self._failed))

    def start(self) -> None:
        self.taking = True
        for round_ in self._rounds:
            round_.start()

    async def stop(self, grace: float) -> None:
        """Take no more work, let what is held finish within `grace` seconds, then cut the rest short
        and hand it back, for the next taker to start at once."""
        self.taking = False
        self._wake.set()
        running = [task for _, task in self.held.values()]
        if running and grace > 0:
            log.info("%s finishing %d held pieces of work (up to %g s)", self.queue.name, len(running), grace)
            await asyncio.wait(running, timeout=grace)
        for round_ in self._rounds:
            await round_.stop()
        unfinished = list(self.held.values())
        for _, task in unfinished:
            task.cancel()
        for _, task in unfinished:
            with contextlib.suppress(BaseException):
                await task
        for work, _ in unfinished:
            with contextlib.suppress(GatewayError):
                if await self.queue.release(work):
                    log.info("%s %s handed back to the queue", work.kind, work.id)
        with contextlib.suppress(GatewayError):
            await self.queue.leave()

    def _failed(self, exc: Exception) -> float:
        """A round's failure: the queue or the store away is waited out, anything else logged."""
        if isinstance(exc, GatewayError):
            self._outage_at = time.monotonic()
        else:
            log.exception("a work loop round of %s failed; going on", self.queue.name)
        return OUTAGE_PAUSE_SECONDS

    # -- what it holds -----------------------------------------------------------------------

    def wake(self) -> None:
        """Work was enqueued: an idle loop looks at once."""
        self._wake.set()

    def holding(self, cls: str | None = None, kind: str | None = None) -> int:
        return sum(1 for work, _ in self.held.values()
                   if (cls is None or work.cls == cls) and (kind is None or work.kind == kind))

    def drop(self, work_id: str) -> None:
        """The work was cancelled or deleted: cut its run short and count it finished (its own run
        ending it is not a drop)."""
        for entry, (work, task) in list(self.held.items()):
            if work.id == work_id and task is not asyncio.current_task():
                self._dropped.add(entry)
                task.cancel()

    # -- taking and running ------------------------------------------------------------------

    def _free(self, cls: str) -> bool:
        return self.holding(cls) < self.capacity.get(cls, 0)

    async def _take_round(self) -> None:
        if not self.taking:
            await asyncio.sleep(3600)
            return
        classes = [cls for cls in CLASSES if self._free(cls)]
        self._wake.clear()  # before looking: work enqueued from now on wakes the wait below
        work = await self.queue.take(classes) if classes else None
        if work is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wake.wait()
            return
        self._metrics.work_wait.labels(work.cls).observe(max(0.0, time.time() - work.enqueued))
        self.held[work.entry] = (work, asyncio.create_task(self.handle(work), name=f"work-{work.id}"))

    async def handle(self, work: Work) -> None:
        """Run one piece of taken work and mark it done; cut short by a stop or a lost lease it stays
        in the queue (handed back by `stop`, or reclaimed after its lease)."""
        finished = False
        try:
            await self._handlers[work.kind].run(work)
            finished = True
        except asyncio.CancelledError:
            finished = work.entry in self._dropped
            if not finished:
                raise
        except Exception:  # noqa: BLE001 - the work stays leased and runs again after its lease
            log.exception("%s %s failed in the worker", work.kind, work.id)
        finally:
            self.held.pop(work.entry, None)
            self._dropped.discard(work.entry)
            self._wake.set()
            if finished:
                with contextlib.suppress(GatewayError):
                    await self.queue.done(work)

    # -- leases ------------------------------------------------------------------------------

    async def _lease_round(self) -> None:
        await self.queue.heartbeat()
        for work, task in list(self.held.values()):
            if not await self.queue.renew(work):
                log.warning("%s %s is no longer held by %s (its lease lapsed): dropping this run", work.kind,
                            work.id, self.queue.name)
                task.cancel()

    async def _reclaim_round(self) -> None:
        if time.monotonic() - self._outage_at < self.queue.lease * 1.5:
            return  # just back from an outage: holders renew first, no mass takeover
        await self.reclaim_once()

    async def reclaim_once(self) -> None:
        """Queue again the work whose lease lapsed; fail what has used its last attempt, each on its own:
        one that cannot be failed is logged and left for the next round, the others are still failed."""
        requeued, exhausted = await self.queue.reclaim(self._max_attempts)
        for work in requeued:
            self._metrics.lease_takeovers.labels(work.cls).inc()
            log.warning("%s %s: its worker's lease lapsed; queued again (attempt %d)", work.kind, work.id,
                        work.attempt + 1)
        for work in exhausted:
            try:
                await self._handlers[work.kind].exhausted(work, exhausted_failure(work))
            except Exception as exc:  # noqa: BLE001 - one item's fault: the round goes on with the others
                if store_trouble(exc):
                    raise  # the queue or the store away: every item would meet it; the next round tries again
                log.exception("%s %s could not be failed after its last attempt; left for the next round",
                              work.kind, work.id)
                continue
            await self.queue.done(work)  # only now: until it is failed, another round finds it again
            self._metrics.work_exhausted.labels(work.cls).inc()
