"""The work queue of the single process: a `work` table in the job store's SQLite database.

A job's entry is added in the transaction that inserts the job (`add_work`), so a job never
exists without it. An entry is taken by setting its holder and lease; the appkeys' turns are kept
in `work_served`, so the least recently served goes first, its oldest entry. One process owns the
database file, so work held by another holder was held by a process that is gone (killed, or
stopped before it could hand it back): it counts as lapsed at once, and a restart after SIGKILL
queues it again with its attempt count raised. Every verb is one transaction on the store's thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

from ...work.queue import BATCH, CLASSES, JOB, ClassDepth, Work

T = TypeVar("T")
LEASE_SECONDS = 30.0  # held work not renewed this long (the store away as long) may be queued again

WORK_SCHEMA = """
CREATE TABLE IF NOT EXISTS work (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cls TEXT NOT NULL,
    appkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    enqueued REAL NOT NULL,
    holder TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS work_waiting ON work (cls, holder, seq);
CREATE TABLE IF NOT EXISTS work_served (
    cls TEXT NOT NULL,
    appkey TEXT NOT NULL,
    turn INTEGER NOT NULL,
    PRIMARY KEY (cls, appkey)
);
"""


class Transact(Protocol):
    """Runs a function of the connection as one transaction on the store's thread."""

    def __call__(self, func: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


def add_work(db: sqlite3.Connection, cls: str, appkey: str, kind: str, work_id: str, enqueued: float) -> None:
    db.execute("INSERT INTO work (cls, appkey, kind, id, enqueued) VALUES (?, ?, ?, ?, ?)",
               (cls, appkey, kind, work_id, enqueued))


def queue_active_jobs(db: sqlite3.Connection) -> None:
    """A database made before the work table: its queued and processing jobs get their entries, a
    processing one as held by the process that is gone, with the runs cut short before it."""
    db.execute(f"INSERT INTO work (cls, appkey, kind, id, attempt, enqueued, holder) "
               f"SELECT '{BATCH}', appkey, '{JOB}', id, "
               f"CASE status WHEN 'processing' THEN MAX(attempts - 1, 0) ELSE attempts END, created_at, "
               f"CASE status WHEN 'processing' THEN '' END "
               f"FROM jobs WHERE status IN ('queued', 'processing') ORDER BY seq")


def _work(row: sqlite3.Row) -> Work:
    return Work(row["cls"], row["appkey"], row["kind"], row["id"], row["attempt"], row["enqueued"], str(row["seq"]))


class SqliteWorkQueue:
    """`WorkQueue` over the job store's database, as the holder `name`."""

    def __init__(self, transact: Transact, name: str, lease: float = LEASE_SECONDS) -> None:
        self._transact = transact
        self.name = name
        self.lease = lease

    async def enqueue(self, cls: str, appkey: str, kind: str, work_id: str) -> None:
        now = time.time()
        await self._transact(lambda db: add_work(db, cls, appkey, kind, work_id, now))

    async def take(self, classes: Sequence[str]) -> Work | None:
        def take(db: sqlite3.Connection) -> Work | None:
            for cls in classes:
                row = db.execute("SELECT w.* FROM work w LEFT JOIN work_served s ON s.cls = w.cls AND "
                                 "s.appkey = w.appkey WHERE w.cls = ? AND w.holder IS NULL "
                                 "ORDER BY COALESCE(s.turn, 0), w.seq LIMIT 1", (cls,)).fetchone()
                if row is None:
                    continue
                db.execute("UPDATE work SET holder = ?, lease_until = ? WHERE seq = ?",
                           (self.name, time.time() + self.lease, row["seq"]))
                db.execute("INSERT INTO work_served (cls, appkey, turn) VALUES "
                           "(?, ?, (SELECT COALESCE(MAX(turn), 0) + 1 FROM work_served)) "
                           "ON CONFLICT (cls, appkey) DO UPDATE SET turn = excluded.turn", (cls, row["appkey"]))
                return _work(row)
            return None
        return await self._transact(take)

    async def renew(self, work: Work) -> bool:
        def renew(db: sqlite3.Connection) -> bool:
            return db.execute("UPDATE work SET lease_until = ? WHERE seq = ? AND holder = ?",
                              (time.time() + self.lease, int(work.entry), self.name)).rowcount == 1
        return await self._transact(renew)

    async def done(self, work: Work) -> None:
        await self._transact(lambda db: db.execute("DELETE FROM work WHERE seq = ?", (int(work.entry),)))

    async def release(self, work: Work) -> bool:
        """Hand held work back, in its place: the next take of its appkey gets it first."""
        def release(db: sqlite3.Connection) -> bool:
            return db.execute("UPDATE work SET holder = NULL, lease_until = 0 WHERE seq = ? AND holder = ?",
                              (int(work.entry), self.name)).rowcount == 1
        return await self._transact(release)

    async def reclaim(self, max_attempts: int) -> tuple[list[Work], list[Work]]:
        def reclaim(db: sqlite3.Connection) -> tuple[list[Work], list[Work]]:
            now = time.time()
            requeued: list[Work] = []
            exhausted: list[Work] = []
            rows = db.execute("SELECT * FROM work WHERE holder IS NOT NULL AND (holder != ? OR lease_until < ?) "
                              "ORDER BY seq", (self.name, now)).fetchall()
            for row in rows:
                work = replace(_work(row), attempt=row["attempt"] + 1)
                if work.attempt >= max_attempts:  # held by this holder now, done once it has been failed
                    db.execute("UPDATE work SET holder = ?, lease_until = ? WHERE seq = ?",
                               (self.name, now + self.lease, row["seq"]))
                    exhausted.append(work)
                else:
                    db.execute("UPDATE work SET holder = NULL, lease_until = 0, attempt = ? WHERE seq = ?",
                               (work.attempt, row["seq"]))
                    requeued.append(work)
            return requeued, exhausted
        return await self._transact(reclaim)

    async def heartbeat(self) -> None:
        """Nothing to record: one process owns the database."""

    async def leave(self) -> None:
        """Nothing to record: one process owns the database."""

    async def depth(self) -> dict[str, ClassDepth]:
        def depth(db: sqlite3.Connection) -> dict[str, ClassDepth]:
            now = time.time()
            found = {row[0]: ClassDepth(row[1], max(0.0, now - row[2])) for row in db.execute(
                "SELECT cls, COUNT(*), MIN(enqueued) FROM work WHERE holder IS NULL GROUP BY cls")}
            return {cls: found.get(cls, ClassDepth(0, 0.0)) for cls in CLASSES}
        return await self._transact(depth)
