"""What only the SQLite job store does: open a database made by an earlier version of the schema.
(The `JobStore` contract, on SQLite and Redis side by side, is tests/cluster/test_redis_store.py.)"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sami_gateway.jobs.local.sqlite_store import JOB_COLUMNS, SCHEMA, SqliteJobStore, job_row
from sami_gateway.jobs.model import InputKind, Job, JobStatus
from sami_gateway.jobs.storage_quota import StorageUsage

# The schema before the request's fingerprint was kept with its Idempotency-Key, and a job's bytes.
ADDED = {"idempotency_fingerprint": "TEXT", "input_bytes": "INTEGER NOT NULL DEFAULT 0",
         "stored_bytes": "INTEGER NOT NULL DEFAULT 0"}
FIRST_SCHEMA = SCHEMA
for column, definition in ADDED.items():
    FIRST_SCHEMA = FIRST_SCHEMA.replace(f",\n    {column} {definition}", "")
FIRST_COLUMNS = tuple(column for column in JOB_COLUMNS if column not in ADDED)


def job(job_id: str, input_bytes: int = 0) -> Job:
    return Job(id=job_id, appkey="a", status=JobStatus.QUEUED, request={"model": "htdemucs"},
               input_kind=InputKind.URL, input_ref="https://example.com/song.mp3", created_at=time.time(),
               input_bytes=input_bytes)


async def test_a_database_of_the_first_schema_opens_and_keeps_its_keys(tmp_path: Path) -> None:
    assert not any(column in FIRST_SCHEMA for column in ADDED)
    path = tmp_path / "jobs.sqlite3"
    row = dict(zip(JOB_COLUMNS, job_row(job("job_old")), strict=True))
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_SCHEMA)
        db.execute(f"INSERT INTO jobs ({','.join(FIRST_COLUMNS)}, idempotency_key) "
                   f"VALUES ({','.join('?' * (len(FIRST_COLUMNS) + 1))})",
                   (*(row[column] for column in FIRST_COLUMNS), "old-key"))
    db.close()
    store = SqliteJobStore(path)
    await store.open()
    try:
        old = await store.get_job("job_old")
        assert old is not None and old.input_bytes == 0
        assert await store.usage("a") == StorageUsage(0, 0, 1)  # charged nothing: its size was not kept
        assert await store.create_job(job("job_x"), "old-key", 0.0, "fp-a") == (old, False)  # no fingerprint: any
        new, created = await store.create_job(job("job_new", 40), "new-key", 0.0, "fp-a")
        assert created and await store.create_job(job("job_y"), "new-key", 0.0, "fp-a") == (new, False)
        assert await store.usage("a") == StorageUsage(40, 0, 2)
    finally:
        await store.close()
    reopened = SqliteJobStore(path)  # the column is there now: opening again changes nothing
    await reopened.open()
    try:
        assert await reopened.get_job("job_new") == new
    finally:
        await reopened.close()
