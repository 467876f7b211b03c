"""How jobs, uploads and errors look on the wire (the JSON of `JOBS_API.md`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import GatewayError
from .model import Job, JobError, JobStatus, Upload
from .storage_quota import StorageQuotaExceeded

COPIED = {"copied_to": "custom storage"}

PREFIXES = ("/api/v1/jobs", "/api/v1/uploads", "/api/v1/models")  # answered with the Jobs API's error JSON


def iso(seconds: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC (`2026-11-29T12:00:00Z`)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_error(exc: GatewayError) -> JobError:
    return JobError(exc.status.http, exc.status.code, exc.status.text, exc.detail or exc.status.meaning)


def ready_seconds(job: Job) -> dict[str, float] | None:
    """While the job is processing, the seconds of each stem computed so far (0 for a stem not yet
    begun), when its run tells them; None otherwise."""
    if job.status is not JobStatus.PROCESSING or job.ready is None:
        return None
    return {stem: round(float(job.ready.get(stem, 0.0)), 3) for stem in job.request.get("stems", ())}


def job_json(job: Job, result_url: Callable[[Job, str], str]) -> dict[str, Any]:
    """The job object; `result_url(job, stem)` gives a stem's signed URL."""
    result = None
    if job.result is not None:
        result = {stem: COPIED if item.copied else {
            "url": result_url(job, stem), "format": item.format, "size": item.size, "sha256": item.sha256,
            "duration": item.duration} for stem, item in job.result.items()}
    streams = None
    if job.status is JobStatus.PROCESSING:  # each stem as it is computed (`growing_results`)
        streams = {stem: result_url(job, stem) for stem in job.request.get("stems", ())
                   if stem not in job.copy_results_to}
    error = None if job.error is None else {
        "status_code": job.error.status_code, "status_text": job.error.status_text, "message": job.error.message}
    return {
        "id": job.id, "name": job.name, "status": job.status.value, "progress": round(job.progress, 2),
        "ready": ready_seconds(job),
        "model": job.request.get("model"), "stems": list(job.request.get("stems", ())),
        "output": dict(job.request.get("output", {})), "metadata": dict(job.metadata),
        "input": None if job.input_info is None else dict(job.input_info),
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "completed_at": iso(job.completed_at), "expires_at": iso(job.expires_at),
        "error": error, "result": result, "streams": streams, "cache_hit": job.cache_hit,
        "webhook_url": job.webhook_url,
    }


def upload_json(upload: Upload) -> dict[str, Any]:
    return {"upload_id": upload.id, "size": upload.size, "sha256": upload.sha256}


def error_body(request_id: str, exc: GatewayError) -> dict[str, Any]:
    """The Jobs API's error JSON: the invoke table's codes, the detail as a message; a storage quota's
    refusal also says what is full (`quota`)."""
    detail: dict[str, Any] = {"status_code": exc.status.code, "status_text": exc.status.text,
                              "message": exc.detail or exc.status.meaning}
    if isinstance(exc, StorageQuotaExceeded):
        detail["quota"] = exc.quota
    return {"error": detail, "request_id": request_id}


def now() -> float:
    return time.time()
