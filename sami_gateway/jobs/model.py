"""What the Jobs API stores: jobs, uploads and webhook events, as values."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .blob_keys import upload_key

MIME = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "aac": "audio/aac", "m4a": "audio/mp4"}


def media_type(fmt: str) -> str:
    """The Content-Type of a result file of format `fmt`."""
    return MIME.get(fmt) or mimetypes.types_map.get("." + fmt, "application/octet-stream")


class JobStatus(StrEnum):
    """Where a job is in its life; the last three are terminal."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class InputKind(StrEnum):
    """Where a job's input comes from: stored with the job (`data`, an upload) or fetched when it runs."""

    STORED = "stored"  # bytes kept under the job's input key
    URL = "url"


@dataclass(frozen=True)
class StoredResult:
    """One result as stored: a file under `key`, or a note that it went to the caller's storage."""

    key: str | None
    format: str
    size: int = 0
    sha256: str = ""
    duration: float = 0.0
    copied: bool = False  # PUT to the caller's `copy_results_to` URL instead of kept here


@dataclass(frozen=True)
class JobError:
    """Why a job failed, as invoke would have answered: HTTP status, SAMI code, text, message."""

    http: int
    status_code: int
    status_text: str
    message: str


@dataclass(frozen=True)
class Job:
    """One job as stored. `request` holds the namespace's fields (`model`, `stems`, `output`)."""

    id: str
    appkey: str
    status: JobStatus
    request: Mapping[str, Any]
    input_kind: InputKind
    input_ref: str  # the input's key in the blob store, or its URL
    created_at: float  # unix seconds
    input_bytes: int = 0  # the stored input's size (0 for a URL: fetched when it runs, never kept)
    seq: int = 0  # creation order, assigned by the store; lists go newest first by it
    progress: float = 0.0
    ready: Mapping[str, float] | None = None  # while processing: seconds of each stem computed, if known
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    copy_results_to: Mapping[str, str] = field(default_factory=dict)
    input_info: Mapping[str, Any] | None = None
    result: Mapping[str, StoredResult] | None = None
    error: JobError | None = None
    cache_hit: bool = False
    attempts: int = 0  # runs started; a run cut short by a crash starts again
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None

    def with_(self, **changes: Any) -> Job:
        return replace(self, **changes)

    @property
    def stored_bytes(self) -> int:
        """The bytes this job keeps in storage: its input and the results kept here (what its appkey is
        charged for)."""
        kept = (item.size for item in (self.result or {}).values() if item.key is not None)
        return self.input_bytes + sum(kept)


@dataclass(frozen=True)
class Upload:
    """A direct upload: created with a signed PUT URL, then filled once."""

    id: str
    appkey: str
    created_at: float
    expires_at: float  # the PUT URL's expiry until completed; then when the upload is deleted
    max_bytes: int
    completed_at: float | None = None
    size: int = 0
    sha256: str = ""

    @property
    def key(self) -> str:
        return upload_key(self.id)


@dataclass(frozen=True)
class WebhookEvent:
    """A terminal event to POST to a job's webhook until one attempt succeeds."""

    id: str
    job_id: str
    appkey: str
    url: str
    body: bytes  # the exact bytes signed and sent
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    delivered_at: float | None = None
    abandoned_at: float | None = None  # retried for the whole schedule without a 2xx
    last_error: str = ""

    def with_(self, **changes: Any) -> WebhookEvent:
        return replace(self, **changes)
