"""What the gateway answers, as frozen values: jobs, their results, uploads, invoke results, events, models."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["JobStatus", "TERMINAL_STATUSES", "JobError", "StemResult", "Job", "JobPage", "Upload", "InvokeResult",
           "JobEvent", "JobModel", "ModelList", "COPIED_TO_CUSTOM_STORAGE"]

COPIED_TO_CUSTOM_STORAGE = "custom storage"  # what a result says of a stem sent to `copy_results_to`


class JobStatus(StrEnum):
    """Where a job is in its life; the last three are terminal."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value})


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the code invoke would have answered for the same input."""

    status_code: int
    status_text: str
    message: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobError:
        return cls(int(data.get("status_code") or 0), str(data.get("status_text") or ""),
                   str(data.get("message") or ""))


@dataclass(frozen=True)
class StemResult:
    """One stem's result: a signed `url` and the file's description, or `copied_to` for custom storage."""

    url: str | None = None
    format: str | None = None
    size: int | None = None
    sha256: str | None = None
    duration: float | None = None
    copied_to: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_copied(self) -> bool:
        """True when the stem went to the caller's storage (`copy_results_to`): nothing to download here."""
        return self.copied_to is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StemResult:
        size = data.get("size")
        return cls(url=data.get("url"), format=data.get("format"), size=None if size is None else int(size),
                   sha256=data.get("sha256"), duration=_float(data.get("duration")),
                   copied_to=data.get("copied_to"), raw=dict(data))


@dataclass(frozen=True)
class Job:
    """A job as the gateway describes it (the contract's job JSON); `raw` keeps the whole object."""

    id: str
    status: str
    progress: float = 0.0
    name: str | None = None
    model: str | None = None
    stems: tuple[str, ...] = ()
    output: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    input: Mapping[str, Any] | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    expires_at: str | None = None
    error: JobError | None = None
    result: Mapping[str, StemResult] | None = None
    ready: Mapping[str, float] | None = None  # while processing: seconds of each stem computed so far
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """True once the job has succeeded, failed or been cancelled: it will not change again."""
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == JobStatus.SUCCEEDED.value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Build from the job JSON; fields the SDK does not know stay in `raw`."""
        error = data.get("error")
        result = data.get("result")
        return cls(
            id=str(data["id"]), status=str(data.get("status") or ""),
            progress=float(data.get("progress") or 0.0), ready=_ready(data.get("ready")), name=data.get("name"),
            model=data.get("model"),
            stems=tuple(data.get("stems") or ()), output=dict(data.get("output") or {}),
            metadata=dict(data.get("metadata") or {}), input=data.get("input"),
            created_at=data.get("created_at"), started_at=data.get("started_at"),
            completed_at=data.get("completed_at"), expires_at=data.get("expires_at"),
            error=JobError.from_dict(error) if isinstance(error, Mapping) else None,
            result=({stem: StemResult.from_dict(item) for stem, item in result.items() if isinstance(item, Mapping)}
                    if isinstance(result, Mapping) else None),
            raw=dict(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """The job JSON as received."""
        return dict(self.raw)


@dataclass(frozen=True)
class JobPage:
    """One page of `list`: jobs newest first, and the cursor of the next page (None on the last)."""

    jobs: tuple[Job, ...]
    next_cursor: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPage:
        return cls(tuple(Job.from_dict(job) for job in data.get("jobs") or ()), data.get("next_cursor") or None)


@dataclass(frozen=True)
class JobModel:
    """A model a job may name: its `stems` (a job may ask for any of them) and the `default_stems` it gets."""

    name: str
    kind: str = ""
    description: str = ""
    sources: tuple[str, ...] = ()
    stems: tuple[str, ...] = ()
    default_stems: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobModel:
        return cls(name=str(data["name"]), kind=str(data.get("kind") or ""),
                   description=str(data.get("description") or ""), sources=tuple(data.get("sources") or ()),
                   stems=tuple(data.get("stems") or ()), default_stems=tuple(data.get("default_stems") or ()),
                   raw=dict(data))


@dataclass(frozen=True)
class ModelList:
    """`models()`: the models that can run now (the default first), the default's name (None while it
    cannot run), and the `output` options (formats, default, sample rates, channels) as sent."""

    models: tuple[JobModel, ...]
    default_model: str | None = None
    output: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(model.name for model in self.models)

    def get(self, name: str) -> JobModel | None:
        """The model called `name`, or None when it is not listed."""
        return next((model for model in self.models if model.name == name), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelList:
        return cls(tuple(JobModel.from_dict(model) for model in data.get("models") or ()),
                   data.get("default_model") or None, dict(data.get("output") or {}), dict(data))


@dataclass(frozen=True)
class Upload:
    """A direct upload: its id (for `submit(upload_id=...)`), and once filled its size and sha256."""

    upload_id: str
    upload_url: str | None = None
    expires_at: str | None = None
    max_bytes: int | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class InvokeResult:
    """A successful SAMI invoke: the decoded `data` bytes (e.g. the stem's audio) and the parsed payload."""

    task_id: str
    namespace: str
    data: bytes
    payload: Any
    status_code: int = 20000000
    status_text: str = "OK"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job: its `event` type (`status`, `progress`), data and id."""

    event: str
    data: Any
    id: str | None = None

    def _field(self, name: str) -> Any:
        if not isinstance(self.data, Mapping):
            return None
        if name in self.data:
            return self.data[name]
        job = self.data.get("job")
        return job.get(name) if isinstance(job, Mapping) else None

    @property
    def status(self) -> str | None:
        value = self._field("status")
        return None if value is None else str(value)

    @property
    def progress(self) -> float | None:
        return _float(self._field("progress"))

    @property
    def ready(self) -> Mapping[str, float] | None:
        """Seconds of each stem computed so far, while the job is processing (a `progress` event's)."""
        return _ready(self._field("ready"))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def parse(cls, event: str, data: str, id: str | None) -> JobEvent:
        """`data` as JSON when it is JSON, else as the text itself."""
        try:
            value: Any = json.loads(data)
        except ValueError:
            value = data
        return cls(event or "message", value, id)


def _ready(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(stem): float(seconds) for stem, seconds in value.items() if isinstance(seconds, (int, float))}
