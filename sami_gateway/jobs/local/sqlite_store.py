"""The embedded job store: SQLite in WAL mode, one connection on one thread of its own; the work
queue of the single process (`sqlite_queue.py`) lives in the same database.

Every write is one transaction committed with `synchronous=FULL`: a job answered 201 is on disk,
and survives the process being killed at any moment (or the machine losing power).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ...errors import Code, GatewayError, error
from ...work.queue import BATCH, JOB
from ..blobs import FULL_RETRY_AFTER
from ..codec import NESTED, job_from_dict, job_to_dict
from ..model import Job, JobStatus, Upload, WebhookEvent
from ..storage_quota import StorageLimits, StorageUsage, exceeded
from ..store import IdempotencyMismatch, QueueHead
from .sqlite_queue import WORK_SCHEMA, SqliteWorkQueue, add_work, queue_active_jobs

T = TypeVar("T")
DELETED_REMEMBERED = 10_000  # deleted job ids kept (one process owns the file): a stream on one says cancelled

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    appkey TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    input_kind TEXT NOT NULL,
    input_ref TEXT NOT NULL,
    name TEXT,
    metadata TEXT NOT NULL,
    webhook_url TEXT,
    copy_results_to TEXT NOT NULL,
    input_info TEXT,
    result TEXT,
    error TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    expires_at REAL,
    idempotency_key TEXT,
    idempotency_fingerprint TEXT,
    input_bytes INTEGER NOT NULL DEFAULT 0,
    stored_bytes INTEGER NOT NULL DEFAULT 0,
    ready TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_appkey ON jobs (appkey, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_idempotency ON jobs (appkey, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    appkey TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    max_bytes INTEGER NOT NULL,
    completed_at REAL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS uploads_by_appkey ON uploads (appkey);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    appkey TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    abandoned_at REAL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_due ON webhook_events (next_attempt_at)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
"""

JOB_COLUMNS = ("id", "appkey", "status", "progress", "request", "input_kind", "input_ref", "name", "metadata",
               "webhook_url", "copy_results_to", "input_info", "result", "error", "cache_hit", "attempts",
               "created_at", "started_at", "completed_at", "expires_at", "input_bytes", "stored_bytes", "ready")
EVENT_COLUMNS = ("id", "job_id", "appkey", "url", "body", "created_at", "next_attempt_at", "attempts",
                 "delivered_at", "abandoned_at", "last_error")
# Columns added since the first schema, each with its definition: added to a database that lacks them.
MIGRATIONS = (("jobs", "idempotency_fingerprint", "TEXT"), ("jobs", "input_bytes", "INTEGER NOT NULL DEFAULT 0"),
              ("jobs", "stored_bytes", "INTEGER NOT NULL DEFAULT 0"), ("jobs", "ready", "TEXT"))
UPLOAD_COLUMNS = ("id", "appkey", "created_at", "expires_at", "max_bytes", "completed_at", "size", "sha256")


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def job_row(job: Job) -> tuple[Any, ...]:
    values = job_to_dict(job)
    values["cache_hit"] = int(job.cache_hit)
    values["stored_bytes"] = job.stored_bytes  # summed per appkey for its storage quota
    return tuple(_json(values[name]) if name in NESTED else values[name] for name in JOB_COLUMNS)


def job_from_row(row: sqlite3.Row) -> Job:
    values = {name: _loads(row[name]) if name in NESTED else row[name] for name in (*JOB_COLUMNS, "seq")}
    return job_from_dict(values)


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns a database made by an earlier version lacks (`CREATE TABLE IF NOT EXISTS`
    leaves an existing table as it was)."""
    for table, column, definition in MIGRATIONS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _event_from_row(row: sqlite3.Row) -> WebhookEvent:
    return WebhookEvent(**{name: row[name] for name in EVENT_COLUMNS})


def _upload_from_row(row: sqlite3.Row) -> Upload:
    return Upload(**{name: row[name] for name in UPLOAD_COLUMNS})


def _event_row(event: WebhookEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in EVENT_COLUMNS)


def _usage(db: sqlite3.Connection, appkey: str) -> StorageUsage:
    jobs, job_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(stored_bytes), 0) FROM jobs WHERE appkey = ?",
                                 (appkey,)).fetchone()
    uploads, upload_bytes = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM uploads WHERE appkey = ?",
                                       (appkey,)).fetchone()
    return StorageUsage(job_bytes + upload_bytes, uploads, jobs)


def _fits(db: sqlite3.Connection, appkey: str, adding: StorageUsage, limits: StorageLimits | None) -> None:
    """Raise StorageQuotaExceeded when `adding` does not fit the appkey's `limits` (None: no limits); inside
    the write's transaction, which the exception rolls back."""
    if limits is not None and (refusal := exceeded(_usage(db, appkey), adding, limits)) is not None:
        raise refusal


def unavailable(exc: sqlite3.OperationalError) -> GatewayError:
    """The store cannot be written or read now (a full disk, an I/O error, a lock held too long):
    507 or 503 with Retry-After, which callers may try again; the store itself is left consistent."""
    if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_FULL:  # the primary code of an extended one
        return error(Code.INSUFFICIENT_STORAGE, "the job store: the disk is full", {"Retry-After": FULL_RETRY_AFTER})
    return error(Code.BACKEND_UNAVAILABLE, f"the job store: {exc}", {"Retry-After": FULL_RETRY_AFTER})


class SqliteJobStore:
    """`JobStore` in one SQLite file; calls run in order on the store's own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="job-store")
        self._db: sqlite3.Connection | None = None
        self._deleted: OrderedDict[str, None] = OrderedDict()  # ids deleted lately, oldest first

    async def transact(self, func: Callable[[sqlite3.Connection], T]) -> T:
        """`func` of the connection as one transaction, on the store's thread."""
        def run() -> T:
            assert self._db is not None, "the store is not open"
            with self._db:  # one transaction: committed, or rolled back on an exception
                return func(self._db)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except sqlite3.OperationalError as exc:  # the transaction was rolled back: nothing half-written
            raise unavailable(exc) from exc

    async def open(self) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            had_work = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'work'").fetchone() is not None
            db.executescript(SCHEMA + WORK_SCHEMA)
            with db:
                migrate(db)
                if not had_work:
                    queue_active_jobs(db)
            self._db = db
        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    def work_queue(self, name: str) -> SqliteWorkQueue:
        """The work queue in this database, as the holder `name`."""
        return SqliteWorkQueue(self.transact, name)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    # -- jobs --------------------------------------------------------------------------------

    async def create_job(self, job: Job, idempotency_key: str | None = None, idempotency_since: float = 0.0,
                         fingerprint: str = "", limits: StorageLimits | None = None) -> tuple[Job, bool]:
        def create(db: sqlite3.Connection) -> tuple[Job, bool]:
            if idempotency_key is not None:
                row = db.execute("SELECT * FROM jobs WHERE appkey = ? AND idempotency_key = ?",
                                 (job.appkey, idempotency_key)).fetchone()
                if row is not None and row["created_at"] >= idempotency_since:
                    if row["idempotency_fingerprint"] not in (None, "", fingerprint):
                        raise IdempotencyMismatch(f"Idempotency-Key was used for job {row['id']} "
                                                  "with a different request")
                    return job_from_row(row), False
                if row is not None:  # an old use of the key: it may be used again
                    db.execute("UPDATE jobs SET idempotency_key = NULL WHERE seq = ?", (row["seq"],))
            _fits(db, job.appkey, StorageUsage(job.input_bytes, 0, 1), limits)
            placeholders = ",".join("?" * (len(JOB_COLUMNS) + 2))
            cursor = db.execute(f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}, idempotency_key, "
                                f"idempotency_fingerprint) VALUES ({placeholders})",
                                (*job_row(job), idempotency_key, fingerprint if idempotency_key else None))
            add_work(db, BATCH, job.appkey, JOB, job.id, job.created_at)  # a job exists with its queue entry
            return job.with_(seq=cursor.lastrowid), True
        return await self.transact(create)

    async def get_job(self, job_id: str) -> Job | None:
        def get(db: sqlite3.Connection) -> Job | None:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else job_from_row(row)
        return await self.transact(get)

    async def list_jobs(self, appkey: str, statuses: Collection[JobStatus], limit: int,
                        before_seq: int | None = None) -> list[Job]:
        def select(db: sqlite3.Connection) -> list[Job]:
            query = "SELECT * FROM jobs WHERE appkey = ?"
            args: list[Any] = [appkey]
            if before_seq is not None:
                query += " AND seq < ?"
                args.append(before_seq)
            if statuses:
                query += f" AND status IN ({','.join('?' * len(statuses))})"
                args += [status.value for status in statuses]
            query += " ORDER BY seq DESC LIMIT ?"
            args.append(limit)
            return [job_from_row(row) for row in db.execute(query, args)]
        return await self.transact(select)

    async def queue_heads(self) -> list[QueueHead]:
        def heads(db: sqlite3.Connection) -> list[QueueHead]:
            rows = db.execute(
                "SELECT j.appkey, j.id, j.seq, j.created_at, q.queued FROM jobs j JOIN "
                "(SELECT appkey, MIN(seq) AS first, COUNT(*) AS queued FROM jobs WHERE status = 'queued' "
                "GROUP BY appkey) q ON j.seq = q.first ORDER BY j.seq")
            return [QueueHead(*row) for row in rows]
        return await self.transact(heads)

    async def oldest_queued(self) -> float | None:
        def oldest(db: sqlite3.Connection) -> float | None:
            row = db.execute("SELECT MIN(created_at) FROM jobs WHERE status = 'queued'").fetchone()
            return None if row is None else row[0]
        return await self.transact(oldest)

    async def transition(self, job: Job, from_statuses: Collection[JobStatus],
                         event: WebhookEvent | None = None) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            columns = JOB_COLUMNS[2:]
            values = job_row(job.with_(ready=None))[2:]  # the stems' seconds are a run's: each reports its own
            cursor = db.execute(
                f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} "
                f"WHERE id = ? AND status IN ({','.join('?' * len(from_statuses))})",
                (*values, job.id, *(status.value for status in from_statuses)))
            if cursor.rowcount != 1:
                return False
            if event is not None:
                db.execute(f"INSERT INTO webhook_events ({','.join(EVENT_COLUMNS)}) "
                           f"VALUES ({','.join('?' * len(EVENT_COLUMNS))})", _event_row(event))
            return True
        return await self.transact(write)

    async def set_progress(self, job_id: str, progress: float, ready: Mapping[str, float] | None = None) -> None:
        def write(db: sqlite3.Connection) -> None:
            # Only a report that raises the progress is kept, its seconds ready with it (as in Redis).
            db.execute("UPDATE jobs SET progress = ?, ready = COALESCE(?, ready) "
                       "WHERE id = ? AND status = 'processing' AND progress < ?",
                       (progress, _json(ready), job_id, progress))
        await self.transact(write)

    async def delete_job(self, job_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM webhook_events WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._deleted[job_id] = None  # before: a reader that finds the job gone finds it deleted
        if len(self._deleted) > DELETED_REMEMBERED:
            self._deleted.popitem(last=False)
        await self.transact(delete)

    async def was_deleted(self, job_id: str) -> bool:
        return job_id in self._deleted

    async def expired_jobs(self, now: float, limit: int) -> list[Job]:
        def select(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute("SELECT * FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                              "ORDER BY expires_at LIMIT ?", (now, limit))
            return [job_from_row(row) for row in rows]
        return await self.transact(select)

    async def job_ids(self) -> set[str]:
        return await self.transact(lambda db: {row[0] for row in db.execute("SELECT id FROM jobs")})

    async def usage(self, appkey: str) -> StorageUsage:
        return await self.transact(lambda db: _usage(db, appkey))

    # -- uploads -----------------------------------------------------------------------------

    async def create_upload(self, upload: Upload, limits: StorageLimits | None = None) -> None:
        def insert(db: sqlite3.Connection) -> None:
            _fits(db, upload.appkey, StorageUsage(0, 1, 0), limits)
            db.execute(f"INSERT INTO uploads ({','.join(UPLOAD_COLUMNS)}) VALUES "
                       f"({','.join('?' * len(UPLOAD_COLUMNS))})",
                       tuple(getattr(upload, name) for name in UPLOAD_COLUMNS))
        await self.transact(insert)

    async def get_upload(self, upload_id: str) -> Upload | None:
        def get(db: sqlite3.Connection) -> Upload | None:
            row = db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
            return None if row is None else _upload_from_row(row)
        return await self.transact(get)

    async def complete_upload(self, upload: Upload, limits: StorageLimits | None = None) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT completed_at FROM uploads WHERE id = ?", (upload.id,)).fetchone()
            if row is None or row[0] is not None:
                return False
            _fits(db, upload.appkey, StorageUsage(upload.size, 0, 0), limits)
            cursor = db.execute("UPDATE uploads SET completed_at = ?, size = ?, sha256 = ?, expires_at = ? "
                                "WHERE id = ? AND completed_at IS NULL",
                                (upload.completed_at, upload.size, upload.sha256, upload.expires_at, upload.id))
            return cursor.rowcount == 1
        return await self.transact(update)

    async def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        def select(db: sqlite3.Connection) -> list[Upload]:
            rows = db.execute("SELECT * FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", (now, limit))
            return [_upload_from_row(row) for row in rows]
        return await self.transact(select)

    async def delete_upload(self, upload_id: str) -> None:
        await self.transact(lambda db: db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,)))

    async def upload_ids(self) -> set[str]:
        return await self.transact(lambda db: {row[0] for row in db.execute("SELECT id FROM uploads")})

    # -- webhook events ----------------------------------------------------------------------

    async def due_events(self, now: float, limit: int) -> list[WebhookEvent]:
        def select(db: sqlite3.Connection) -> list[WebhookEvent]:
            rows = db.execute("SELECT * FROM webhook_events WHERE delivered_at IS NULL AND abandoned_at IS NULL "
                              "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?", (now, limit))
            return [_event_from_row(row) for row in rows]
        return await self.transact(select)

    async def next_event_at(self) -> float | None:
        def select(db: sqlite3.Connection) -> float | None:
            row = db.execute("SELECT MIN(next_attempt_at) FROM webhook_events "
                             "WHERE delivered_at IS NULL AND abandoned_at IS NULL").fetchone()
            return None if row is None else row[0]
        return await self.transact(select)

    async def event_attempted(self, event: WebhookEvent) -> None:
        def update(db: sqlite3.Connection) -> None:
            db.execute("UPDATE webhook_events SET attempts = ?, next_attempt_at = ?, delivered_at = ?, "
                       "abandoned_at = ?, last_error = ? WHERE id = ?",
                       (event.attempts, event.next_attempt_at, event.delivered_at, event.abandoned_at,
                        event.last_error, event.id))
        await self.transact(update)

    async def events_of(self, job_id: str) -> list[WebhookEvent]:
        """Every event of a job, delivered or not (tests and diagnostics)."""
        def select(db: sqlite3.Connection) -> list[WebhookEvent]:
            rows = db.execute("SELECT * FROM webhook_events WHERE job_id = ? ORDER BY created_at", (job_id,))
            return [_event_from_row(row) for row in rows]
        return await self.transact(select)
