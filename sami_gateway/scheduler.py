"""Admission and fair interleaving of inference work on a worker thread.

A job is a generator that yields units of work (one model call each) and
receives their results; the worker runs one unit of one job at a time, taking
jobs round-robin, so a short request waits for a few units of a long one,
never for all of it. Batch jobs (the Jobs API's) run only when no interactive
job has a unit ready, so an invoke waits for at most the unit of a batch job
that is running. Jobs past their deadline or whose client left are dropped
between units. Nothing here knows what a unit is: the namespace supplies how
to run one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import Code, GatewayError, error

log = logging.getLogger(__name__)
Steps = Generator[Any, Any, Any]


@dataclass(frozen=True)
class Limits:
    """The admission bound: requests admitted at once and the work (audio-seconds) they carry."""

    max_jobs: int
    max_cost: float


@dataclass(eq=False)
class Job:
    """One admitted request: its generator, where its answer goes, and its bookkeeping."""

    steps: Steps
    cost: float
    deadline: float  # time.monotonic()
    run: Callable[[Any], Any]
    context: Callable[[], AbstractContextManager[Any]]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    admitted: float = field(default_factory=time.monotonic)
    first_unit: float | None = None
    busy: float = 0.0
    units: int = 0
    pending: Any = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    batch: bool = False  # runs when no interactive job is ready; not counted in the admission bound


class Outcome(Enum):
    """How a job left the scheduler (the `outcome` label of the jobs metric)."""

    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobStats:
    """How one job went, reported when it leaves the scheduler."""

    outcome: Outcome
    queue_wait: float  # admitted until its first unit started
    busy: float  # seconds its units ran
    units: int


@dataclass(frozen=True)
class Snapshot:
    """What the scheduler holds now, for health and metrics."""

    jobs: int
    queued_cost: float
    saturated: bool
    units_done: int


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread (and the threads it starts, such as its OpenMP team) `nice` steps
    below the event loop, so that when every core is busy with inference the loop still gets a
    core at once. Lowering a priority needs no privilege; where threads have no priority of their
    own, nothing changes."""
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
    except (AttributeError, OSError) as exc:
        log.debug("thread priority unchanged: %s", exc)


class JobTimeout(Exception):
    """The job's deadline passed before it finished."""


class Scheduler:
    """Admits jobs within `limits` and runs their units round-robin on one worker thread."""

    def __init__(self, limits: Limits, name: str = "inference",
                 on_job_done: Callable[[JobStats], None] | None = None, nice: int = 0) -> None:
        self.limits = limits
        self._nice = nice
        self._on_job_done = on_job_done or (lambda stats: None)
        self._ready: deque[Job] = deque()
        self._batch: deque[Job] = deque()
        self._lock = threading.Condition()
        self._jobs = 0
        self._cost = 0.0
        self._units_done = 0
        self._seconds_per_cost = 1.0  # learnt: wall seconds per unit of cost, for Retry-After
        self._admitting = True
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- the event loop's side ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._jobs, self._cost, self._full(), self._units_done)

    def _full(self) -> bool:
        return self._jobs >= self.limits.max_jobs or self._cost >= self.limits.max_cost

    def retry_after(self) -> int:
        """Seconds until the queued work is likely done."""
        return max(1, math.ceil(self._cost * self._seconds_per_cost / max(1, self.limits.max_jobs)))

    def refusal(self) -> GatewayError | None:
        """What a new request would be refused with now (shutting down, or no slot); None if admitted."""
        with self._lock:
            return self._refusal()

    def _refusal(self) -> GatewayError | None:
        if not self._admitting:
            return error(Code.UNAVAILABLE, "shutting down", {"Retry-After": "5"})
        if self._jobs >= self.limits.max_jobs:
            return self._overloaded()
        return None

    def _overloaded(self) -> GatewayError:
        return error(Code.OVERLOADED, f"{self._jobs} requests, {self._cost:.0f} s of audio admitted",
                     {"Retry-After": str(self.retry_after())})

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one request slot for the whole request, taken before its body is read."""
        with self._lock:
            if (refused := self._refusal()) is not None:
                raise refused
            self._jobs += 1
        try:
            yield
        finally:
            with self._lock:
                self._jobs -= 1

    def _admit_cost(self, cost: float) -> None:
        with self._lock:
            if self._cost > 0 and self._cost + cost > self.limits.max_cost:
                raise self._overloaded()
            self._cost += cost

    async def submit(self, steps: Steps, cost: float, timeout: float, run: Callable[[Any], Any],
                     context: Callable[[], AbstractContextManager[Any]] = nullcontext,
                     batch: bool = False) -> Any:
        """The generator's return value, once all its units ran; refused at once past the cost bound.

        The caller holds an `admission` slot; `cost` (audio-seconds) is counted while the job runs.
        A `batch` job holds no slot and is not counted: the Jobs API bounds how many run at once."""
        if batch:
            cost = 0.0
        else:
            self._admit_cost(cost)
        loop = asyncio.get_running_loop()
        job = Job(steps, cost, time.monotonic() + timeout, run, context, loop.create_future(), loop, batch=batch)
        with self._lock:
            self._queue_of(job).append(job)
            self._lock.notify()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client left or the request timed out: drop its units
            job.cancelled.set()
            raise

    def stop_admitting(self) -> None:
        with self._lock:
            self._admitting = False

    async def drain(self, grace: float) -> bool:
        """Stop admitting, wait up to `grace` seconds for admitted jobs; True if none is left."""
        self.stop_admitting()
        deadline = time.monotonic() + grace
        while self.snapshot().jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.snapshot().jobs == 0

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- the worker's side -------------------------------------------------------------------

    def _queue_of(self, job: Job) -> deque[Job]:
        return self._batch if job.batch else self._ready

    def _next(self) -> Job | None:
        """The next interactive job round-robin; a batch job only when none is ready."""
        with self._lock:
            while not self._ready and not self._batch and not self._stopped:
                self._lock.wait()
            if self._stopped:
                return None
            return (self._ready or self._batch).popleft()

    def _work(self) -> None:
        lower_thread_priority(self._nice)
        while (job := self._next()) is not None:
            if self._step(job):
                with self._lock:
                    self._queue_of(job).append(job)

    def _step(self, job: Job) -> bool:
        """Run one unit of `job`; False once the job is finished, failed or dropped."""
        if job.cancelled.is_set():
            return self._finish(job, None, None, dropped=True)
        if time.monotonic() > job.deadline:
            return self._finish(job, None, JobTimeout())
        started = time.monotonic()
        job.first_unit = job.first_unit or started
        try:
            with job.context():
                if job.units == 0:
                    job.pending = next(job.steps)
                result = job.run(job.pending)
                job.units += 1
                job.busy += time.monotonic() - started
                with self._lock:
                    self._units_done += 1
                job.pending = job.steps.send(result)
            return True
        except StopIteration as done:
            return self._finish(job, done.value, None)
        except Exception as exc:  # noqa: BLE001 - handed to the request, which logs it
            return self._finish(job, None, exc)

    def _finish(self, job: Job, value: Any, exc: BaseException | None, dropped: bool = False) -> bool:
        job.steps.close()
        outcome = Outcome.CANCELLED if dropped else Outcome.TIMEOUT if isinstance(exc, JobTimeout) else \
            Outcome.FAILED if exc is not None else Outcome.DONE
        wait = (job.first_unit or time.monotonic()) - job.admitted
        self._on_job_done(JobStats(outcome, wait, job.busy, job.units))
        with self._lock:
            self._cost -= job.cost
            if exc is None and not dropped and job.cost > 0:  # a moving average for Retry-After
                observed = (time.monotonic() - job.admitted) / job.cost
                self._seconds_per_cost = 0.8 * self._seconds_per_cost + 0.2 * observed
        if not dropped:
            job.loop.call_soon_threadsafe(_settle, job.future, value, exc)
        return False


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
