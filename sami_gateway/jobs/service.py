"""The Jobs API's operations, apart from HTTP: submit, get, list, cancel, delete, finish.

Handlers call these with an `Authorization`; the runner calls `finish`. Every change of a job
goes through the store's `transition` and is then published to its waiters.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from ..auth.authenticator import Authorization
from ..config.jobs import JobSettings
from ..errors import Code, GatewayError, error
from ..runtime.namespace import JobNamespace
from .blob_keys import input_key, results_prefix
from .blobs import BlobStore, Written
from .model import InputKind, Job, JobStatus, StoredResult, Upload, WebhookEvent, media_type
from .notify import JobEvents
from .requests import JobRequest, fingerprint
from .signing import UrlSigner
from .storage_quota import StorageLimits, StorageQuotaExceeded, StorageUsage, exceeded, over
from .store import IdempotencyMismatch, JobStore
from .views import iso, job_error, job_json
from .webhooks import WebhookSecrets

log = logging.getLogger("sami_gateway.jobs")
IDEMPOTENCY_SECONDS = 24 * 3600  # a key names the same job for a day, as the contract says
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def log_transition(job: Job, reason: str = "") -> None:
    """One JSON line per job transition."""
    line = {"event": "job", "job_id": job.id, "appkey": job.appkey, "status": job.status.value,
            "attempts": job.attempts, "model": job.request.get("model")}
    if job.error is not None:
        line["status_code"] = job.error.status_code
    if reason:
        line["reason"] = reason
    log.info(orjson.dumps(line).decode())


@dataclass(frozen=True)
class Submission:
    """A checked job request: the gateway's part, and the namespace's fields as the job keeps them
    (the runner hands those to the namespace: they are the one parsed form that is stored)."""

    request: JobRequest
    fields: dict[str, Any]  # the namespace's fields with defaults (the job object shows them)


class JobService:
    """Jobs for one namespace (the first that runs jobs), kept in a store and blob store."""

    def __init__(self, store: JobStore, blobs: BlobStore, settings: JobSettings, signer: UrlSigner,
                 namespace: JobNamespace[Any] | None, namespace_name: str, webhook_secret: WebhookSecrets,
                 max_input_bytes: int, default_base_url: str, *,
                 storage_limits: Callable[[str], StorageLimits]) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self.signer = signer
        self.namespace = namespace
        self.namespace_name = namespace_name  # what a Bearer token must be allowed to call
        self.events = JobEvents()
        self.webhook_secret = webhook_secret
        self.max_input_bytes = max_input_bytes
        self.storage_limits = storage_limits  # an appkey's: its own, or the defaults
        self.default_base_url = settings.public_url or default_base_url
        self.on_change: list[Callable[[Job], None]] = []  # the runner and the webhook sender listen
        self.on_event_dropped: Callable[[Job], None] = lambda job: None  # a webhook event that could not be built

    # -- reading -----------------------------------------------------------------------------

    async def owned(self, auth: Authorization, job_id: str) -> Job:
        """The caller's job; another appkey's is answered as if it did not exist."""
        job = await self.store.get_job(job_id)
        if job is None or job.appkey != auth.appkey:
            raise error(Code.JOB_NOT_FOUND, f"no job {job_id}")
        return job

    def result_ttl(self, job: Job) -> float:
        """Seconds a URL to the job's results stays valid: `signed_url_ttl`, never past the job's
        expiry (at least 1 s: a URL must be valid when given)."""
        ttl = self.settings.signed_url_ttl
        if job.expires_at is not None:
            ttl = min(ttl, job.expires_at - time.time())
        return max(ttl, 1.0)

    def result_url(self, base_url: str) -> Callable[[Job, str], str]:
        """Signed result URLs valid for `result_ttl`."""
        def url(job: Job, stem: str) -> str:
            ttl = self.result_ttl(job)
            item = (job.result or {}).get(stem)
            if item is not None and item.key is not None:
                direct = self.blobs.public_url(item.key, ttl, f"{stem}.{item.format}", media_type(item.format))
                if direct is not None:
                    return direct
            path, _ = self.signer.sign("GET", f"/api/v1/jobs/{job.id}/results/{stem}", ttl)
            return base_url + path
        return url

    def render(self, job: Job, base_url: str | None = None) -> dict[str, Any]:
        return job_json(job, self.result_url(base_url or self.default_base_url))

    # -- submitting --------------------------------------------------------------------------

    def job_namespace(self) -> JobNamespace[Any]:
        """The namespace that runs jobs; 40200014 DeniedNamespace when this gateway has none."""
        if self.namespace is None:
            raise error(Code.DENIED_NAMESPACE, "no namespace of this gateway runs jobs")
        return self.namespace

    def check(self, request: JobRequest) -> Submission:
        """Parse the namespace's fields and check the rest against them; nothing is stored yet."""
        namespace = self.job_namespace()
        params = namespace.parse_job(request.namespace_fields)
        fields = dict(namespace.job_fields(params))
        stray = sorted(set(request.copy_results_to) - set(fields.get("stems", ())))
        if stray:
            raise error(Code.ILLEGAL_PAYLOAD, f"copy_results_to names stems the job does not produce: {stray}")
        return Submission(request, fields)

    async def admit(self, auth: Authorization) -> None:
        """Refuse a job past the queue bounds: this appkey's (429) or everyone's (503)."""
        heads = await self.store.queue_heads()
        total = sum(head.queued for head in heads)
        mine = next((head.queued for head in heads if head.appkey == auth.appkey), 0)
        if mine >= self.settings.max_queued_jobs_per_appkey:
            raise error(Code.QUOTA_EXCEEDED, f"{mine} jobs of this appkey are queued", {"Retry-After": "30"})
        if total >= self.settings.max_queued_jobs:
            raise error(Code.OVERLOADED, f"{total} jobs are queued", {"Retry-After": "30"})

    async def check_room(self, appkey: str, adding: StorageUsage, unread_body: bool = False) -> None:
        """StorageQuotaExceeded (429) when `adding` does not fit what the appkey may keep. A check ahead
        of a write, to refuse before bytes arrive (`unread_body`: the connection is closed after the
        answer); the store checks again as it records the write."""
        refusal = exceeded(await self.store.usage(appkey), adding, self.storage_limits(appkey))
        if refusal is not None:
            if unread_body:
                refusal.headers["Connection"] = "close"
            raise refusal

    async def room_to_run(self, job: Job) -> None:
        """StorageQuotaExceeded when the job's appkey holds more bytes than its quota allows (the
        results of its earlier jobs took it past): the job fails instead of adding results."""
        refusal = over(await self.store.usage(job.appkey), self.storage_limits(job.appkey))
        if refusal is not None:
            raise refusal

    async def submit(self, auth: Authorization, submission: Submission, idempotency_key: str | None,
                     stored_input: str | None = None, stored: Written | None = None) -> tuple[Job, bool]:
        """Create the job, its input stored first (`stored_input`: already stored under that key, as
        `stored` says); with `idempotency_key`, the job that key named for the same request,
        IdempotencyMismatch (422) when it named one for another request. Past the appkey's storage
        quota, StorageQuotaExceeded (429) and nothing kept."""
        request = submission.request
        if request.webhook_url is not None and not self.webhook_secret(auth.appkey):
            raise error(Code.ILLEGAL_PAYLOAD, "webhook_url needs a webhook secret: set SAMI_WEBHOOK_SECRET "
                        "or the appkey's webhook_secret")
        await self.admit(auth)
        if idempotency_key is None:  # a key's job is answered however full the quota: the store checks after the key
            data = request.input.data if request.input is not None else None
            size = stored.size if stored is not None else len(data) if data is not None else 0
            await self.check_room(auth.appkey, StorageUsage(size, 0, 1))  # before the input is written
        job_id = new_id("job")
        kind, ref, written = await self._store_input(auth, job_id, request, stored_input, stored)
        job = Job(id=job_id, appkey=auth.appkey, status=JobStatus.QUEUED, request=submission.fields,
                  input_kind=kind, input_ref=ref, created_at=time.time(), input_bytes=written.size,
                  name=request.name, metadata=request.metadata, webhook_url=request.webhook_url,
                  copy_results_to=request.copy_results_to)
        since = time.time() - IDEMPOTENCY_SECONDS
        same = "" if idempotency_key is None else fingerprint(request, written.sha256)
        try:
            stored_job, created = await self.store.create_job(job, idempotency_key, since, same,
                                                              self.storage_limits(auth.appkey))
        except (IdempotencyMismatch, StorageQuotaExceeded):
            if kind is InputKind.STORED:
                await self.blobs.delete_prefix(input_key(job_id))
            raise
        if created:
            log_transition(stored_job)
            self._changed(stored_job)
        elif kind is InputKind.STORED:
            await self.blobs.delete_prefix(input_key(job_id))  # the first job keeps its own input
        return stored_job, created

    async def _store_input(self, auth: Authorization, job_id: str, request: JobRequest, stored_input: str | None,
                           stored: Written | None) -> tuple[InputKind, str, Written]:
        """Where the job's input is: (kind, its key or URL, its size and SHA-256 when stored here)."""
        key = input_key(job_id)
        if stored_input is not None:
            await self.blobs.copy(stored_input, key)
            return InputKind.STORED, key, stored or Written(0, "")
        assert request.input is not None
        if request.input.url is not None:
            return InputKind.URL, request.input.url, Written(0, "")
        if request.input.data is not None:
            if len(request.input.data) > self.max_input_bytes:
                raise error(Code.EXCEEDED_DATA_SIZE, f"input larger than {self.max_input_bytes} bytes")
            return InputKind.STORED, key, await self.blobs.put_bytes(key, request.input.data)
        upload = await self.usable_upload(auth, request.input.upload_id or "")
        await self.blobs.copy(upload.key, key)
        return InputKind.STORED, key, Written(upload.size, upload.sha256)

    async def usable_upload(self, auth: Authorization, upload_id: str) -> Upload:
        upload = await self.store.get_upload(upload_id)
        if upload is None or upload.appkey != auth.appkey or upload.expires_at < time.time():
            raise error(Code.JOB_NOT_FOUND, f"no upload {upload_id}")
        if upload.completed_at is None:
            raise error(Code.CONFLICT, f"upload {upload_id} has not been PUT yet")
        return upload

    # -- changing ----------------------------------------------------------------------------

    def _changed(self, job: Job) -> None:
        self.events.publish(job.id)
        for listener in self.on_change:
            listener(job)

    def _event(self, job: Job) -> WebhookEvent | None:
        """The job's terminal webhook event; None without a webhook, or when it cannot be built (a
        record from before the request checks it holds): the job still ends, its event is dropped."""
        if job.webhook_url is None:
            return None
        event_id = new_id("evt")
        now = time.time()
        try:
            body = orjson.dumps({"id": event_id, "type": f"job.{job.status.value}", "created_at": iso(now),
                                 "data": {"job": self.render(job)}})
        except Exception:  # noqa: BLE001 - logged with the job id; ending the job matters more
            log.exception("job %s: its webhook event cannot be built; dropped", job.id)
            self.on_event_dropped(job)
            return None
        return WebhookEvent(event_id, job.id, job.appkey, job.webhook_url, body, now, now)

    async def finish(self, job: Job, status: JobStatus, *, result: dict[str, StoredResult] | None = None,
                     failure: GatewayError | None = None, input_info: dict[str, Any] | None = None,
                     cache_hit: bool = False, reason: str = "") -> Job | None:
        """End a job that is still active; None if it already ended (e.g. cancelled meanwhile)."""
        now = time.time()
        ended = job.with_(status=status, completed_at=now, expires_at=now + self.settings.job_ttl,
                          result=result, error=None if failure is None else job_error(failure),
                          input_info=input_info if input_info is not None else job.input_info,
                          cache_hit=cache_hit, progress=100.0 if status is JobStatus.SUCCEEDED else job.progress)
        if not await self.store.transition(ended, ACTIVE, self._event(ended)):
            return None
        log_transition(ended, reason)
        self._changed(ended)
        return ended

    async def started(self, job: Job, takeover: bool = False) -> Job | None:
        """Claim a queued job for a run (or, `takeover`, one whose worker stopped answering); None if
        someone else took it or it was cancelled."""
        running = job.with_(status=JobStatus.PROCESSING, started_at=time.time(), attempts=job.attempts + 1)
        if not await self.store.transition(running, ACTIVE if takeover else {JobStatus.QUEUED}):
            return None
        log_transition(running)
        self._changed(running)
        return running

    async def cancel(self, auth: Authorization, job_id: str) -> Job:
        """Cancel an active job (its remaining model calls are dropped); a terminal one is returned as is."""
        while True:
            job = await self.owned(auth, job_id)
            if job.status.terminal:
                return job
            ended = await self.finish(job, JobStatus.CANCELLED, reason="cancelled by the client")
            if ended is not None:
                return ended

    async def delete(self, auth: Authorization, job_id: str) -> None:
        """Cancel if needed, then forget the job, its input, its results and what the namespace keeps of it."""
        job = await self.owned(auth, job_id)
        if not job.status.terminal:
            await self.cancel(auth, job_id)
        await self.forget_in_namespace(job.appkey, job.id)  # before the record: a crash between leaves it to retry
        await self.store.delete_job(job.id)
        await self.remove_files(job.id)
        self.events.forget(job.id)
        for listener in self.on_change:
            listener(job.with_(status=JobStatus.CANCELLED))

    async def forget_in_namespace(self, appkey: str, job_id: str) -> None:
        """Have the namespace remove what it keeps of a job (its stem cache entries)."""
        if self.namespace is not None:
            await self.namespace.forget_job(appkey, job_id)

    async def remove_files(self, job_id: str) -> None:
        await self.blobs.delete_prefix(input_key(job_id))
        await self.blobs.delete_prefix(results_prefix(job_id))

    async def list(self, auth: Authorization, statuses: Collection[JobStatus], limit: int,
                   before_seq: int | None) -> list[Job]:
        return await self.store.list_jobs(auth.appkey, statuses, limit, before_seq)
