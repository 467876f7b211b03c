"""What only the single process's work queue does (the contract both queues keep is
tests/test_work_queue.py): a job and its entry are written together, work held by a process that is
gone lapses at once, handed-back work goes back in its place, and an older database is queued."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sami_gateway.jobs.local.sqlite_store import JOB_COLUMNS, SCHEMA, SqliteJobStore, job_row
from sami_gateway.jobs.model import InputKind, Job, JobStatus
from sami_gateway.work.queue import BATCH, JOB


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    opened = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


def job(job_id: str, appkey: str = "a", status: JobStatus = JobStatus.QUEUED, attempts: int = 0) -> Job:
    return Job(id=job_id, appkey=appkey, status=status, request={"model": "htdemucs"}, attempts=attempts,
               input_kind=InputKind.URL, input_ref="https://example.com/song.mp3", created_at=time.time())


async def test_creating_a_job_enqueues_it_once(store: SqliteJobStore) -> None:
    created, _ = await store.create_job(job("job_1"), "key")
    await store.create_job(job("job_2"), "key")  # the same job: nothing enqueued again
    queue = store.work_queue("w")
    work = await queue.take([BATCH])
    assert work is not None and (work.kind, work.id, work.appkey, work.attempt) == (JOB, "job_1", "a", 0)
    assert work.enqueued == created.created_at
    assert await queue.take([BATCH]) is None


async def test_work_of_a_process_that_is_gone_lapses_at_once(store: SqliteJobStore) -> None:
    killed, restarted = store.work_queue("killed"), store.work_queue("restarted")
    await killed.enqueue(BATCH, "k", JOB, "job-1")
    assert await killed.take([BATCH]) is not None
    requeued, _ = await restarted.reclaim(3)
    assert [(w.id, w.attempt) for w in requeued] == [("job-1", 1)]


async def test_released_work_goes_back_in_its_place(store: SqliteJobStore) -> None:
    queue = store.work_queue("w")
    await queue.enqueue(BATCH, "k", JOB, "long-job")
    await queue.enqueue(BATCH, "k", JOB, "next-job")
    held = await queue.take([BATCH])
    assert held is not None and await queue.release(held) is True
    again = await queue.take([BATCH])
    assert again is not None and (again.id, again.attempt) == ("long-job", 0)  # before the appkey's next


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
