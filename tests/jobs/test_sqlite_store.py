"""What only the SQLite job store does: open a database made by an earlier version of the schema.
(The `JobStore` contract, on SQLite and Redis side by side, is tests/cluster/test_redis_store.py.)"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sami_gateway.jobs.model import InputKind, Job, JobStatus
from sami_gateway.jobs.sqlite_store import JOB_COLUMNS, SCHEMA, SqliteJobStore, job_row

# The schema before the request's fingerprint was kept with its Idempotency-Key.
FIRST_SCHEMA = SCHEMA.replace(",\n    idempotency_fingerprint TEXT", "")


def job(job_id: str) -> Job:
    return Job(id=job_id, appkey="a", status=JobStatus.QUEUED, request={"model": "htdemucs"},
               input_kind=InputKind.URL, input_ref="https://example.com/song.mp3", created_at=time.time())


async def test_a_database_of_the_first_schema_opens_and_keeps_its_keys(tmp_path: Path) -> None:
    assert FIRST_SCHEMA != SCHEMA
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_SCHEMA)
        db.execute(f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}, idempotency_key) "
                   f"VALUES ({','.join('?' * (len(JOB_COLUMNS) + 1))})", (*job_row(job("job_old")), "old-key"))
    db.close()
    store = SqliteJobStore(path)
    await store.open()
    try:
        old = await store.get_job("job_old")
        assert old is not None
        assert await store.create_job(job("job_x"), "old-key", 0.0, "fp-a") == (old, False)  # no fingerprint: any
        new, created = await store.create_job(job("job_new"), "new-key", 0.0, "fp-a")
        assert created and await store.create_job(job("job_y"), "new-key", 0.0, "fp-a") == (new, False)
    finally:
        await store.close()
    reopened = SqliteJobStore(path)  # the column is there now: opening again changes nothing
    await reopened.open()
    try:
        assert await reopened.get_job("job_new") == new
    finally:
        await reopened.close()
