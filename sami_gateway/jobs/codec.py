"""Jobs, uploads and webhook events as plain JSON-ready values and back, for every store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from .model import InputKind, Job, JobError, JobStatus, StoredResult, Upload, WebhookEvent

NESTED = frozenset({"request", "metadata", "copy_results_to", "input_info", "result", "error", "ready"})  # JSON values
EVENT_META = tuple(field.name for field in fields(WebhookEvent) if field.name != "body")


def job_to_dict(job: Job) -> dict[str, Any]:
    """Every field of the job: enums as their values, nested values as dicts."""
    return {
        "id": job.id, "appkey": job.appkey, "status": job.status.value, "seq": job.seq, "progress": job.progress,
        "ready": None if job.ready is None else dict(job.ready),
        "request": dict(job.request), "input_kind": job.input_kind.value, "input_ref": job.input_ref,
        "input_bytes": job.input_bytes,
        "name": job.name, "metadata": dict(job.metadata), "webhook_url": job.webhook_url,
        "copy_results_to": dict(job.copy_results_to),
        "input_info": None if job.input_info is None else dict(job.input_info),
        "result": None if job.result is None else {stem: asdict(item) for stem, item in job.result.items()},
        "error": None if job.error is None else asdict(job.error),
        "cache_hit": job.cache_hit, "attempts": job.attempts, "created_at": job.created_at,
        "started_at": job.started_at, "completed_at": job.completed_at, "expires_at": job.expires_at,
    }


def job_from_dict(values: Mapping[str, Any]) -> Job:
    """The job `job_to_dict` gave these values for."""
    result, error = values["result"], values["error"]
    return Job(
        id=values["id"], appkey=values["appkey"], status=JobStatus(values["status"]), request=values["request"],
        input_kind=InputKind(values["input_kind"]), input_ref=values["input_ref"], created_at=values["created_at"],
        input_bytes=values.get("input_bytes") or 0,  # a record from before it was kept: charged nothing
        seq=values["seq"], progress=values["progress"], ready=values.get("ready"), name=values["name"],
        metadata=values["metadata"],
        webhook_url=values["webhook_url"], copy_results_to=values["copy_results_to"],
        input_info=values["input_info"],
        result=None if result is None else {stem: StoredResult(**item) for stem, item in result.items()},
        error=None if error is None else JobError(**error), cache_hit=bool(values["cache_hit"]),
        attempts=values["attempts"], started_at=values["started_at"], completed_at=values["completed_at"],
        expires_at=values["expires_at"])


def upload_to_dict(upload: Upload) -> dict[str, Any]:
    return asdict(upload)


def upload_from_dict(values: Mapping[str, Any]) -> Upload:
    return Upload(**values)


def event_meta(event: WebhookEvent) -> dict[str, Any]:
    """Every field of the event but its body (bytes, kept apart)."""
    return {name: getattr(event, name) for name in EVENT_META}


def event_from_meta(values: Mapping[str, Any], body: bytes) -> WebhookEvent:
    return WebhookEvent(body=body, **values)
