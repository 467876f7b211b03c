"""The `WorkQueue` contract, run on both back-ends: the single process's SQLite table and scale-out's
Redis streams must take, renew, hand back and reclaim alike. The SQLite runs need no redis-server:
one is started (once per session) only when a Redis run is collected.

What only one back-end does is tested beside it: tests/jobs/test_sqlite_queue.py (a job and its
entry written together, work of a process that is gone lapsing at once, an older database) and
tests/cluster/test_workqueue.py (heartbeats, consumers, an unreachable Redis, a lost answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.workqueue import RedisWorkQueue
from sami_gateway.jobs.local.sqlite_store import SqliteJobStore
from sami_gateway.work.queue import BATCH, CLASSES, INTERACTIVE, INVOKE, JOB, WorkQueue

Queues = Callable[[str, float], WorkQueue]  # (holder name, lease seconds) -> that holder's queue


@pytest.fixture(params=["sqlite", "redis"])
async def queues(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queues]:
    """A maker of holders' queues over one empty back-end."""
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
        await store.open()

        def sqlite_queue(name: str, lease: float) -> WorkQueue:
            queue = store.work_queue(name)
            queue.lease = lease
            return queue

        yield sqlite_queue
        await store.close()
    else:
        client = redis_client(request.getfixturevalue("redis").url)
        await client.flushdb()
        yield lambda name, lease: RedisWorkQueue(client, name, lease=lease)
        await client.aclose()


async def test_round_robin_across_appkeys_and_invokes_first(queues: Queues) -> None:
    queue = queues("w", 10)
    for n in range(5):
        await queue.enqueue(BATCH, "big", JOB, f"big-{n}")
    await queue.enqueue(BATCH, "small", JOB, "small-0")
    await queue.enqueue(INTERACTIVE, "big", INVOKE, "inv-0")
    order = []
    while (work := await queue.take(CLASSES)) is not None:
        order.append(work.id)
        await queue.done(work)
    # the invoke first; then the backlog's first job and the other appkey's single one, alternately
    assert order == ["inv-0", "big-0", "small-0", "big-1", "big-2", "big-3", "big-4"]


async def test_only_the_classes_asked_for_are_taken(queues: Queues) -> None:
    queue = queues("w", 10)
    await queue.enqueue(BATCH, "k", JOB, "job-0")
    assert await queue.take([INTERACTIVE]) is None  # a worker whose invoke slots are free, not its job slots
    work = await queue.take([BATCH])
    assert work is not None
    assert (work.cls, work.kind, work.id, work.appkey, work.attempt) == (BATCH, JOB, "job-0", "k", 0)


async def test_the_least_recently_served_appkey_goes_first_after_a_return(queues: Queues) -> None:
    queue = queues("w", 10)
    await queue.enqueue(BATCH, "a", JOB, "a-0")
    taken = await queue.take([BATCH])
    assert taken is not None
    await queue.done(taken)
    assert await queue.take([BATCH]) is None
    for appkey, work_id in (("b", "b-0"), ("a", "a-1"), ("b", "b-1")):
        await queue.enqueue(BATCH, appkey, JOB, work_id)
    ids = [(await queue.take([BATCH])).id for _ in range(3)]  # type: ignore[union-attr]
    assert ids == ["b-0", "a-1", "b-1"]  # b was never served: it goes before a


async def test_a_lapsed_lease_is_reclaimed_with_its_attempt_counted(queues: Queues) -> None:
    queue = queues("w", 0.3)
    await queue.enqueue(BATCH, "k", JOB, "job-1")
    held = await queue.take([BATCH])
    assert held is not None and held.attempt == 0
    assert await queue.reclaim(3) == ([], [])  # not lapsed yet
    assert await queue.renew(held) is True
    await asyncio.sleep(0.4)
    requeued, exhausted = await queue.reclaim(3)
    assert [w.id for w in requeued] == ["job-1"] and exhausted == []
    assert await queue.renew(held) is False  # the lapsed lease is no longer held
    again = await queue.take([BATCH])
    assert again is not None and (again.id, again.attempt, again.enqueued) == ("job-1", 1, held.enqueued)


async def test_renewing_keeps_the_lease_and_done_work_is_never_reclaimed(queues: Queues) -> None:
    queue = queues("w", 0.4)
    await queue.enqueue(INTERACTIVE, "k", INVOKE, "inv")
    held = await queue.take([INTERACTIVE])
    assert held is not None
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await queue.renew(held) is True
        assert await queue.reclaim(3) == ([], [])
    await queue.done(held)
    await asyncio.sleep(0.5)
    assert await queue.reclaim(3) == ([], [])


async def test_a_lease_taken_over_is_not_renewed(queues: Queues) -> None:
    """A holder cut off past its lease, whose work another took over (to fail it: its last attempt),
    learns so when it renews; the lease is not taken back from the new holder."""
    slow, reaper = queues("slow", 0.1), queues("reaper", 0.1)
    await slow.enqueue(BATCH, "k", JOB, "last-try")
    held = await slow.take([BATCH])
    assert held is not None
    await asyncio.sleep(0.15)
    _, exhausted = await reaper.reclaim(1)
    assert [w.id for w in exhausted] == ["last-try"]  # the reaper holds it now, to fail it
    assert await slow.renew(held) is False
    assert await reaper.renew(exhausted[0]) is True
    await reaper.done(exhausted[0])


async def test_exhausted_after_the_last_attempt_until_done(queues: Queues) -> None:
    queue = queues("w", 0.1)
    await queue.enqueue(BATCH, "k", JOB, "doomed")
    outcomes = []
    for _ in range(3):
        assert await queue.take([BATCH]) is not None
        await asyncio.sleep(0.15)
        outcomes.append(await queue.reclaim(3))
    assert [len(requeued) for requeued, _ in outcomes] == [1, 1, 0]
    doomed = outcomes[-1][1]
    assert [w.id for w in doomed] == ["doomed"] and doomed[0].attempt == 3
    assert await queue.take([BATCH]) is None  # held by the reclaimer, to be failed
    await asyncio.sleep(0.15)
    assert [w.id for w in (await queue.reclaim(3))[1]] == ["doomed"]  # not failed yet: found again
    await queue.done(doomed[0])
    await asyncio.sleep(0.15)
    assert await queue.reclaim(3) == ([], [])  # failed and done: gone


async def test_work_handed_back_is_taken_at_once_with_its_attempt_unchanged(queues: Queues) -> None:
    """Where in its appkey's line it goes back differs: in its place on SQLite, at the end on Redis
    (tests/jobs/test_sqlite_queue.py, tests/cluster/test_workqueue.py)."""
    stopping, other = queues("stopping", 60), queues("other", 60)
    await stopping.enqueue(BATCH, "k", JOB, "long-job")
    held = await stopping.take([BATCH])
    assert held is not None and await other.take([BATCH]) is None
    assert await stopping.release(held) is True
    assert await stopping.release(held) is False  # no longer its own
    again = await other.take([BATCH])
    assert again is not None and (again.id, again.attempt, again.enqueued) == ("long-job", 0, held.enqueued)
    assert await other.reclaim(3) == ([], [])


async def test_depth_counts_what_waits_per_class(queues: Queues) -> None:
    queue = queues("w", 5)
    for n in range(3):
        await queue.enqueue(BATCH, f"k{n % 2}", JOB, f"j{n}")
    await queue.enqueue(INTERACTIVE, "k0", INVOKE, "i0")
    await asyncio.sleep(0.05)
    depth = await queue.depth()
    assert (depth[BATCH].queued, depth[INTERACTIVE].queued) == (3, 1)
    assert 0.04 < depth[BATCH].oldest_age < 5
    assert await queue.take(CLASSES) is not None
    depth = await queue.depth()
    assert (depth[INTERACTIVE].queued, depth[INTERACTIVE].oldest_age) == (0, 0)
    assert depth[BATCH].queued == 3
