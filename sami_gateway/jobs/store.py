"""The small interface behind which jobs, uploads and webhook events are kept.

The embedded implementation is SQLite (`sqlite_store.py`); a shared one (Redis) implements the
same verbs. Every change of a job's status goes through `transition`, which applies only from
the statuses it names, atomically with the webhook event the change emits: a job is finished,
cancelled or claimed once, and its event exists if and only if its terminal state does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import Code, GatewayError
from .model import Job, JobStatus, Upload, WebhookEvent
from .storage_quota import StorageLimits, StorageUsage


class IdempotencyMismatch(GatewayError):
    """The Idempotency-Key names a job made from another request (its fingerprint differs)."""

    code = Code.IDEMPOTENCY_MISMATCH


@dataclass(frozen=True)
class QueueHead:
    """The oldest queued job of one appkey, and how many that appkey has queued."""

    appkey: str
    job_id: str
    seq: int
    created_at: float
    queued: int


class JobStore(Protocol):
    """Jobs, uploads and webhook events, durable across restarts."""

    async def open(self) -> None:
        """Create or open the store."""

    async def close(self) -> None:
        """Release it."""

    # -- jobs --------------------------------------------------------------------------------

    async def create_job(self, job: Job, idempotency_key: str | None = None, idempotency_since: float = 0.0,
                         fingerprint: str = "", limits: StorageLimits | None = None) -> tuple[Job, bool]:
        """Store a new job (its `seq` assigned), or, when the appkey used `idempotency_key` for a
        job created after `idempotency_since`, that job instead: (job, created). The request's
        `fingerprint` is kept with the key; IdempotencyMismatch when the key's job was made from a
        request of another fingerprint (one stored without a fingerprint matches any). With `limits`,
        StorageQuotaExceeded (nothing stored) when the new job and its input do not fit the appkey's.
        A new job's entry in the work queue is added with it (`work/queue.py`)."""

    async def get_job(self, job_id: str) -> Job | None:
        """The job, whoever owns it (callers check the appkey)."""

    async def list_jobs(self, appkey: str, statuses: Collection[JobStatus], limit: int,
                        before_seq: int | None = None) -> list[Job]:
        """The appkey's jobs, newest first, of these statuses (all when empty), older than `before_seq`."""

    async def queue_heads(self) -> list[QueueHead]:
        """For each appkey with queued jobs: its oldest one and its count."""

    async def oldest_queued(self) -> float | None:
        """When the oldest queued job was created (unix seconds), None when none is queued."""

    async def transition(self, job: Job, from_statuses: Collection[JobStatus],
                         event: WebhookEvent | None = None) -> bool:
        """Write `job` (every field but id, appkey and seq) if its stored status is one of
        `from_statuses`, and add `event` with it; False (and nothing written) otherwise."""

    async def set_progress(self, job_id: str, progress: float, ready: Mapping[str, float] | None = None) -> None:
        """Raise a processing job's progress to `progress` (it never goes down), with the seconds of each
        stem computed so far (`ready`) when given."""

    async def delete_job(self, job_id: str) -> None:
        """Forget the job and its pending events."""

    async def was_deleted(self, job_id: str) -> bool:
        """Whether `delete_job` removed the job lately (a DELETE, or expiry): a job that is gone
        without it (its state lost with the store's) is not."""

    async def expired_jobs(self, now: float, limit: int) -> list[Job]:
        """Terminal jobs whose `expires_at` has passed."""

    async def job_ids(self) -> set[str]:
        """Every stored job id (for sweeping orphan files)."""

    async def usage(self, appkey: str) -> StorageUsage:
        """What the appkey holds: its uploads' and jobs' bytes (`stored_bytes`), its uploads, its jobs."""

    # -- uploads -----------------------------------------------------------------------------

    async def create_upload(self, upload: Upload, limits: StorageLimits | None = None) -> None:
        """Store a new, empty upload; with `limits`, StorageQuotaExceeded (nothing stored) when the
        appkey holds as many uploads as they allow, or all its bytes."""

    async def get_upload(self, upload_id: str) -> Upload | None:
        """The upload, whoever owns it."""

    async def complete_upload(self, upload: Upload, limits: StorageLimits | None = None) -> bool:
        """Record its size, hash and new expiry if it was not completed yet; with `limits`,
        StorageQuotaExceeded (nothing recorded) when its size does not fit the appkey's bytes."""

    async def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        """Uploads past their `expires_at`."""

    async def delete_upload(self, upload_id: str) -> None:
        """Forget the upload."""

    async def upload_ids(self) -> set[str]:
        """Every stored upload id (for sweeping orphan files)."""

    # -- webhook events ----------------------------------------------------------------------

    async def due_events(self, now: float, limit: int) -> list[WebhookEvent]:
        """Undelivered events whose next attempt is due, oldest first."""

    async def next_event_at(self) -> float | None:
        """When the next undelivered event is due."""

    async def event_attempted(self, event: WebhookEvent) -> None:
        """Record an attempt: its count, next time, last error and, once delivered, `delivered_at`."""
