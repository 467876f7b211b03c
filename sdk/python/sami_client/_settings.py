"""What both clients share: where the gateway is, the token, job references, upload checks."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SamiClientError
from .models import Job, Upload

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "SAMI_URL"
TOKEN_ENV = "SAMI_TOKEN"
CHUNK_SIZE = 1024 * 1024  # bytes read or written at once when streaming files

JobRef = str | Job  # a job id, or a job as returned by another call


def resolve_base_url(base_url: str | None) -> str:
    """`base_url`, else $SAMI_URL, else the gateway's default address; without a trailing slash."""
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """`token`, else $SAMI_TOKEN, else none."""
    return token if token is not None else os.environ.get(TOKEN_ENV) or None


def job_id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else str(job)


def check_upload_size(path: Path, size: int, slot: Upload) -> None:
    """Refuse here, before sending a byte, a file the gateway said it would refuse."""
    if slot.max_bytes is not None and size > slot.max_bytes:
        raise SamiClientError(f"{path} is {size} bytes, more than the {slot.max_bytes} an upload may hold")
