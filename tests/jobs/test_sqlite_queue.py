"""The work queue of the single process, in the job store's SQLite database: the same verbs and
meanings as the Redis queue (tests/cluster/test_workqueue.py), and what only it does: a job and its
entry are written together, and work held by a process that is gone lapses at once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sami_gateway.jobs.local.sqlite_store import JOB_COLUMNS, SCHEMA, SqliteJobStore, job_row
from sami_gateway.jobs.model import InputKind, Job, JobStatus
from sami_gateway.work.queue import BATCH, CLASSES, INTERACTIVE, INVOKE, JOB


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


def job(job_id: str, appkey: str = "a", status: JobStatus = JobStatus.QUEUED, attempts: int = 0) -> Job:
    return Job(id=job_id, appkey=appkey, status=status, request={"model": "htdemucs"}, attempts=attempts,
               input_kind=InputKind.URL, input_ref="https://example.com/song.mp3", created_at=time.time())


async def test_round_robin_across_appkeys_and_interactive_first(store: SqliteJobStore) -> None:
    queue = store.work_queue("w1")
    for n in range(5):
        await queue.enqueue(BATCH, "big", JOB, f"big-{n}")
    await queue.enqueue(BATCH, "small", JOB, "small-0")
    await queue.enqueue(INTERACTIVE, "big", INVOKE, "inv-0")
    order = []
    while (work := await queue.take(CLASSES)) is not None:
        order.append(work.id)
        await queue.done(work)
    assert order == ["inv-0", "big-0", "small-0", "big-1", "big-2", "big-3", "big-4"]


async def test_least_recently_served_goes_first_after_a_return(store: SqliteJobStore) -> None:
    queue = store.work_queue("w1")
    await queue.enqueue(BATCH, "a", JOB, "a-0")
    taken = await queue.take([BATCH])
    assert taken is not None
    await queue.done(taken)
    for appkey, work_id in (("b", "b-0"), ("a", "a-1"), ("b", "b-1")):
        await queue.enqueue(BATCH, appkey, JOB, work_id)
    ids = [(await queue.take([BATCH])).id for _ in range(3)]  # type: ignore[union-attr]
    assert ids == ["b-0", "a-1", "b-1"]  # b was never served: it goes before a


async def test_creating_a_job_enqueues_it_once(store: SqliteJobStore) -> None:
    created, _ = await store.create_job(job("job_1"), "key")
    await store.create_job(job("job_2"), "key")  # the same job: nothing enqueued again
    queue = store.work_queue("w")
    work = await queue.take([BATCH])
    assert work is not None and (work.kind, work.id, work.appkey, work.attempt) == (JOB, "job_1", "a", 0)
    assert work.enqueued == created.created_at
    assert await queue.take([BATCH]) is None


async def test_a_lapsed_lease_is_requeued_with_its_attempt_raised(store: SqliteJobStore) -> None:
    queue = store.work_queue("w")
    queue.lease = 0.2
    await queue.enqueue(BATCH, "k", JOB, "job-1")
    held = await queue.take([BATCH])
    assert held is not None and await queue.reclaim(3) == ([], [])  # not lapsed yet
    assert await queue.renew(held) is True
    await asyncio.sleep(0.3)
    requeued, exhausted = await queue.reclaim(3)
    assert [w.id for w in requeued] == ["job-1"] and exhausted == []
    assert await queue.renew(held) is False  # no longer held
    again = await queue.take([BATCH])
    assert again is not None and again.attempt == 1 and again.enqueued == held.enqueued


async def test_work_of_a_process_that_is_gone_lapses_at_once(store: SqliteJobStore) -> None:
    killed, restarted = store.work_queue("killed"), store.work_queue("restarted")
    await killed.enqueue(BATCH, "k", JOB, "job-1")
    assert await killed.take([BATCH]) is not None
    requeued, _ = await restarted.reclaim(3)
    assert [(w.id, w.attempt) for w in requeued] == [("job-1", 1)]


async def test_exhausted_after_the_last_attempt_until_done(store: SqliteJobStore) -> None:
    queue = store.work_queue("w")
    await queue.enqueue(BATCH, "k", JOB, "doomed")
    outcomes = []
    for n in range(3):
        assert await queue.take([BATCH]) is not None
        outcomes.append(await store.work_queue(f"next-{n}").reclaim(3))
    assert [len(r) for r, _ in outcomes] == [1, 1, 0]
    doomed = outcomes[-1][1]
    assert [w.id for w in doomed] == ["doomed"] and doomed[0].attempt == 3
    assert await queue.take([BATCH]) is None  # held by the reclaimer, to be failed
    assert [w.id for w in (await store.work_queue("later").reclaim(3))[1]] == ["doomed"]  # not failed yet
    await queue.done(doomed[0])
    assert await store.work_queue("after").reclaim(3) == ([], [])


async def test_released_work_is_taken_first_with_its_attempt_unchanged(store: SqliteJobStore) -> None:
    queue = store.work_queue("w")
    await queue.enqueue(BATCH, "k", JOB, "long-job")
    await queue.enqueue(BATCH, "k", JOB, "next-job")
    held = await queue.take([BATCH])
    assert held is not None and await queue.release(held) is True
    assert await queue.release(held) is False  # no longer its own
    again = await queue.take([BATCH])
    assert again is not None and (again.id, again.attempt) == ("long-job", 0)
    depth = await queue.depth()
    assert depth[BATCH].queued == 1 and depth[INTERACTIVE].queued == 0


async def test_a_database_made_before_the_work_table_queues_its_active_jobs(tmp_path: Path) -> None:
    """Queued jobs of an earlier version run; a processing one was cut short by its process's end, and
    one that has used its last attempt comes back to be failed."""
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA)
        for old in (job("job_q", attempts=1), job("job_p", status=JobStatus.PROCESSING, attempts=1),
                    job("job_x", status=JobStatus.PROCESSING, attempts=3), job("job_s", status=JobStatus.SUCCEEDED)):
            db.execute(f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({','.join('?' * len(JOB_COLUMNS))})",
                       job_row(old))
    db.close()
    store = SqliteJobStore(path)
    await store.open()
    try:
        queue = store.work_queue("new")
        requeued, exhausted = await queue.reclaim(3)
        assert [(w.id, w.attempt) for w in requeued] == [("job_p", 1)]
        assert [(w.id, w.attempt) for w in exhausted] == [("job_x", 3)]
        taken = [await queue.take([BATCH]) for _ in range(3)]
        assert [(w.id, w.attempt) for w in taken if w is not None] == [("job_q", 1), ("job_p", 1)]
    finally:
        await store.close()
