"""The scheduler with stand-in work: admission, fairness, deadlines, cancellation, drain."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Generator

import pytest

from sami_gateway.errors import Code, GatewayError
from sami_gateway.runtime.scheduler import Limits, Scheduler, TaskTimeout

UNIT = 0.01  # seconds of stand-in work per unit


def work(units: int, log: list[str] | None = None, tag: str = "") -> Generator[float, None, str]:
    for _ in range(units):
        yield UNIT
        if log is not None:
            log.append(tag)
    return tag or "done"


def sleep(seconds: float) -> None:
    time.sleep(seconds)


@pytest.fixture
def scheduler(make_scheduler: Callable[[int, float], Scheduler]) -> Scheduler:
    return make_scheduler(3, 100.0)


def submit(sched: Scheduler, steps: Generator[float, None, str], cost: float = 1.0,
           timeout: float = 30.0) -> asyncio.Task[str]:
    return asyncio.create_task(sched.submit(steps, cost, timeout, sleep))


async def test_runs_a_job_to_its_return_value(scheduler: Scheduler) -> None:
    assert await submit(scheduler, work(3, tag="x")) == "x"
    assert scheduler.snapshot().queued_cost == 0 and scheduler.snapshot().units_done == 3


async def test_refuses_past_the_request_bound_at_once(scheduler: Scheduler) -> None:
    slots = [scheduler.admission() for _ in range(3)]
    for slot in slots:
        slot.__enter__()
    assert scheduler.snapshot().saturated
    started = time.monotonic()
    with pytest.raises(GatewayError) as info, scheduler.admission():
        pass
    assert time.monotonic() - started < 0.1
    assert info.value.code is Code.OVERLOADED and int(info.value.headers["Retry-After"]) >= 1
    slots[0].__exit__(None, None, None)
    with scheduler.admission():  # room again
        assert await submit(scheduler, work(1)) == "done"
    for slot in slots[1:]:
        slot.__exit__(None, None, None)
    assert scheduler.snapshot().tasks == 0


async def test_refuses_past_the_cost_bound_but_admits_a_lone_big_job(scheduler: Scheduler) -> None:
    first = submit(scheduler, work(20), cost=80)
    await asyncio.sleep(0)
    with pytest.raises(GatewayError) as info:
        await scheduler.submit(work(1), 30, 30.0, sleep)
    assert info.value.code is Code.OVERLOADED
    await first
    assert await submit(scheduler, work(1), cost=500) == "done"  # alone, even past the bound


async def test_refuses_past_the_held_bytes_but_admits_a_lone_big_request(
        make_scheduler: Callable[[int, float], Scheduler]) -> None:
    scheduler = make_scheduler(8, 1000.0)
    scheduler.limits = Limits(8, 1000.0, max_bytes=100)
    with scheduler.holding(60):
        assert scheduler.snapshot().held_bytes == 60 and not scheduler.snapshot().saturated
        with pytest.raises(GatewayError) as info, scheduler.holding(50):
            pass
        assert info.value.code is Code.OVERLOADED and "MiB held" in (info.value.detail or "")
        with scheduler.holding(40):  # to the bound exactly: admitted, and the scheduler is full
            assert scheduler.snapshot().saturated
        assert scheduler.snapshot().held_bytes == 60
    assert scheduler.snapshot().held_bytes == 0
    with scheduler.holding(500):  # alone, even past the bound
        assert scheduler.snapshot().held_bytes == 500
    assert scheduler.snapshot().held_bytes == 0


async def test_short_job_is_not_starved_by_a_long_one(scheduler: Scheduler) -> None:
    log: list[str] = []
    long = submit(scheduler, work(60, log, "long"))
    await asyncio.sleep(5 * UNIT)
    short = submit(scheduler, work(3, log, "short"))
    await short
    assert not long.done()
    assert log.count("long") < 20  # the short one waited for a few units, not for sixty
    await long


async def test_deadline_drops_the_remaining_units(scheduler: Scheduler) -> None:
    log: list[str] = []
    with pytest.raises(TaskTimeout):
        await submit(scheduler, work(200, log, "slow"), timeout=0.1)
    ran = len(log)
    assert ran < 50
    await asyncio.sleep(10 * UNIT)
    assert len(log) == ran and scheduler.snapshot().queued_cost == 0


async def test_cancelled_request_stops_within_a_unit(scheduler: Scheduler) -> None:
    log: list[str] = []
    task = submit(scheduler, work(200, log, "gone"))
    await asyncio.sleep(5 * UNIT)
    task.cancel()
    await asyncio.sleep(5 * UNIT)
    ran = len(log)
    await asyncio.sleep(10 * UNIT)
    assert len(log) == ran < 50 and scheduler.snapshot().queued_cost == 0


async def test_a_failing_unit_fails_only_its_job(scheduler: Scheduler) -> None:
    def broken() -> Generator[float, None, str]:
        yield UNIT
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"):
        await submit(scheduler, broken())
    assert await submit(scheduler, work(2)) == "done"


async def test_drain_finishes_admitted_work_and_refuses_new(scheduler: Scheduler) -> None:
    running = submit(scheduler, work(10))
    await asyncio.sleep(0)
    drained = asyncio.create_task(scheduler.drain(grace=5.0))
    await asyncio.sleep(0)
    with pytest.raises(GatewayError) as info, scheduler.admission():
        pass
    assert info.value.code is Code.UNAVAILABLE
    assert await running == "done" and await drained is True


async def test_the_worker_runs_below_the_event_loops_priority() -> None:
    """Inference yields the CPU to the event loop: its thread runs `nice` steps lower."""
    def priority() -> Generator[float, int, int]:
        return (yield 0.0)

    scheduler = Scheduler(Limits(1, 10.0), nice=7)
    scheduler.start()
    try:
        with scheduler.admission():
            worker = await scheduler.submit(priority(), 1.0, 10.0,
                                            lambda _: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    finally:
        scheduler.close()
    assert worker == os.getpriority(os.PRIO_PROCESS, 0) + 7
