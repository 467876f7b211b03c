"""The work queue's contract: what a worker takes, holds under a lease, finishes or hands back.

Two back-ends implement it: SQLite in the single process (`jobs/sqlite_queue.py`, in the job
store's own database, so a job and its queue entry are written together) and Redis Streams in
scale-out (`cluster/workqueue.py`). Both mean the same by every verb:

- `take` looks at the classes in the order given and, within a class, at the appkey served least
  recently, and hands out its oldest entry: one appkey's backlog never makes another appkey's
  single piece of work wait behind it.
- What is taken is held under a lease that its holder renews; `renew` says False once the work is
  no longer the holder's (requeued after the lease lapsed, or taken over).
- `reclaim` queues again the work whose lease lapsed, its attempt count raised; work past its last
  allowed attempt is returned instead, held by the caller, to be failed and then marked `done`.
- `release` hands held work back at once (a worker stopping), its attempt count unchanged.

Delivery is therefore at least once, and the work is written to be repeated.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

INTERACTIVE, BATCH = "interactive", "batch"
CLASSES = (INTERACTIVE, BATCH)  # taken in this order: invokes before jobs
INVOKE, JOB = "invoke", "job"  # the kinds of work


def holder_name() -> str:
    """A name for this process as the holder of work, unique across hosts and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Work:
    """One piece of work as a worker holds it."""

    cls: str  # INTERACTIVE | BATCH
    appkey: str
    kind: str  # INVOKE | JOB
    id: str  # the invoke's work id or the job id
    attempt: int  # runs of it cut short before this one
    enqueued: float  # unix seconds
    entry: str = ""  # the back-end's name of the held entry


@dataclass(frozen=True)
class ClassDepth:
    """What waits in one class: entries not yet taken, and how long the oldest has waited."""

    queued: int
    oldest_age: float


class WorkQueue(Protocol):
    """Enqueue, take, renew, finish, hand back and reclaim work, as the holder `name`."""

    name: str
    lease: float  # seconds held work stays this holder's without a renewal

    async def enqueue(self, cls: str, appkey: str, kind: str, work_id: str) -> None:
        """Add work at the tail of its appkey's entries of `cls`."""

    async def take(self, classes: Sequence[str]) -> Work | None:
        """The next work of the first class in `classes` that has any, fairly across appkeys."""

    async def renew(self, work: Work) -> bool:
        """Reset the lease of held work; False once it is no longer ours."""

    async def done(self, work: Work) -> None:
        """The work is finished (or abandoned): its entry goes."""

    async def release(self, work: Work) -> bool:
        """Hand held work back now, its attempt count unchanged; False if it was no longer ours."""

    async def reclaim(self, max_attempts: int) -> tuple[list[Work], list[Work]]:
        """Queue again the work whose lease lapsed: (requeued, exhausted); the exhausted are now held
        by this holder, to be failed and then marked `done`."""

    async def heartbeat(self) -> None:
        """This holder is alive."""

    async def leave(self) -> None:
        """This holder is going (it holds nothing any more)."""

    async def depth(self) -> dict[str, ClassDepth]:
        """Per class: entries waiting to be taken, and the age of the oldest."""
