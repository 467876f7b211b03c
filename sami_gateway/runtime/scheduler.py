"""Admission and fair interleaving of inference work on a worker thread.

A task is a generator that yields units of work (one model call each) and
receives their results; the worker runs one unit of one task at a time, taking
tasks round-robin, so a short request waits for a few units of a long one,
never for all of it. Batch tasks (the Jobs API's jobs) run only when no
interactive task has a unit ready, so an invoke waits for at most the unit of a
batch task that is running. Tasks past their deadline or whose client left are
dropped between units. Nothing here knows what a unit is: the namespace supplies how
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

from ..errors import Code, GatewayError, error

log = logging.getLogger(__name__)
Steps = Generator[Any, Any, Any]


@dataclass(frozen=True)
class Limits:
    """The admission bound: requests admitted at once, the work (audio-seconds) they carry, and the
    memory (bytes) they hold."""

    max_jobs: int
    max_cost: float
    max_bytes: int = 2**62


@dataclass(eq=False)
class Task:
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
    batch: bool = False  # runs when no interactive task is ready; not counted in the admission bound


class Outcome(Enum):
    """How a task left the scheduler (the `outcome` label of the tasks metric)."""

    DONE = "done"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TaskStats:
    """How one task went, reported when it leaves the scheduler."""

    outcome: Outcome
    queue_wait: float  # admitted until its first unit started
    busy: float  # seconds its units ran
    units: int


@dataclass(frozen=True)
class Snapshot:
    """What the scheduler holds now, for health and metrics."""

    tasks: int
    queued_cost: float
    saturated: bool
    units_done: int
    held_bytes: int = 0


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


class TaskTimeout(Exception):
    """The task's deadline passed before it finished."""


class Scheduler:
    """Admits tasks within `limits` and runs their units round-robin on one worker thread."""

    def __init__(self, limits: Limits, name: str = "inference",
                 on_task_done: Callable[[TaskStats], None] | None = None, nice: int = 0) -> None:
        self.limits = limits
        self._nice = nice
        self._on_task_done = on_task_done or (lambda stats: None)
        self._ready: deque[Task] = deque()
        self._batch: deque[Task] = deque()
        self._lock = threading.Condition()
        self._tasks = 0
        self._cost = 0.0
        self._held = 0  # bytes the admitted requests said they hold (`hold`)
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
            return Snapshot(self._tasks, self._cost, self._full(), self._units_done, self._held)

    def _full(self) -> bool:
        return (self._tasks >= self.limits.max_jobs or self._cost >= self.limits.max_cost
                or self._held >= self.limits.max_bytes)

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
        if self._tasks >= self.limits.max_jobs:
            return self._overloaded()
        return None

    def _overloaded(self) -> GatewayError:
        return error(Code.OVERLOADED, f"{self._tasks} requests, {self._cost:.0f} s of audio, "
                     f"{self._held / 2**20:.0f} MiB held", {"Retry-After": str(self.retry_after())})

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one request slot for the whole request, taken before its body is read."""
        with self._lock:
            if (refused := self._refusal()) is not None:
                raise refused
            self._tasks += 1
        try:
            yield
        finally:
            with self._lock:
                self._tasks -= 1

    @contextmanager
    def holding(self, nbytes: int) -> Iterator[None]:
        """Count `nbytes` of memory as held by an admitted request while the block runs; refused at
        once when that would pass the bound, unless no other request holds any (a lone request
        larger than the bound still runs, as the cost bound lets a lone long one)."""
        with self._lock:
            if self._held > 0 and self._held + nbytes > self.limits.max_bytes:
                raise self._overloaded()
            self._held += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._held -= nbytes

    def _admit_cost(self, cost: float) -> None:
        with self._lock:
            if self._cost > 0 and self._cost + cost > self.limits.max_cost:
                raise self._overloaded()
            self._cost += cost

    async def submit(self, steps: Steps, cost: float, timeout: float, run: Callable[[Any], Any],
                     context: Callable[[], AbstractContextManager[Any]] = nullcontext,
                     batch: bool = False) -> Any:
        """The generator's return value, once all its units ran; refused at once past the cost bound.

        The caller holds an `admission` slot; `cost` (audio-seconds) is counted while the task runs.
        A `batch` task holds no slot and is not counted: the Jobs API bounds how many run at once."""
        if batch:
            cost = 0.0
        else:
            self._admit_cost(cost)
        loop = asyncio.get_running_loop()
        task = Task(steps, cost, time.monotonic() + timeout, run, context, loop.create_future(), loop, batch=batch)
        with self._lock:
            self._queue_of(task).append(task)
            self._lock.notify()
        try:
            return await task.future
        except asyncio.CancelledError:  # the client left or the request timed out: drop its units
            task.cancelled.set()
            raise

    def stop_admitting(self) -> None:
        with self._lock:
            self._admitting = False

    async def drain(self, grace: float) -> bool:
        """Stop admitting, wait up to `grace` seconds for admitted tasks; True if none is left."""
        self.stop_admitting()
        deadline = time.monotonic() + grace
        while self.snapshot().tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.snapshot().tasks == 0

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- the worker's side -------------------------------------------------------------------

    def _queue_of(self, task: Task) -> deque[Task]:
        return self._batch if task.batch else self._ready

    def _next(self) -> Task | None:
        """The next interactive task round-robin; a batch task only when none is ready."""
        with self._lock:
            while not self._ready and not self._batch and not self._stopped:
                self._lock.wait()
            if self._stopped:
                return None
            return (self._ready or self._batch).popleft()

    def _work(self) -> None:
        lower_thread_priority(self._nice)
        while (task := self._next()) is not None:
            if self._step(task):
                with self._lock:
                    self._queue_of(task).append(task)

    def _step(self, task: Task) -> bool:
        """Run one unit of `task`; False once the task is finished, failed or dropped."""
        if task.cancelled.is_set():
            return self._finish(task, None, None, dropped=True)
        if time.monotonic() > task.deadline:
            return self._finish(task, None, TaskTimeout())
        started = time.monotonic()
        task.first_unit = task.first_unit or started
        try:
            with task.context():
                if task.units == 0:
                    task.pending = next(task.steps)
                result = task.run(task.pending)
                task.units += 1
                task.busy += time.monotonic() - started
                with self._lock:
                    self._units_done += 1
                task.pending = task.steps.send(result)
            return True
        except StopIteration as done:
            return self._finish(task, done.value, None)
        except Exception as exc:  # noqa: BLE001 - handed to the request, which logs it
            return self._finish(task, None, exc)

    def _finish(self, task: Task, value: Any, exc: BaseException | None, dropped: bool = False) -> bool:
        task.steps.close()
        outcome = Outcome.CANCELLED if dropped else Outcome.TIMEOUT if isinstance(exc, TaskTimeout) else \
            Outcome.FAILED if exc is not None else Outcome.DONE
        wait = (task.first_unit or time.monotonic()) - task.admitted
        self._on_task_done(TaskStats(outcome, wait, task.busy, task.units))
        with self._lock:
            self._cost -= task.cost
            if exc is None and not dropped and task.cost > 0:  # a moving average for Retry-After
                observed = (time.monotonic() - task.admitted) / task.cost
                self._seconds_per_cost = 0.8 * self._seconds_per_cost + 0.2 * observed
        if not dropped:
            task.loop.call_soon_threadsafe(_settle, task.future, value, exc)
        return False


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
