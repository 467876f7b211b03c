"""Writing results to a folder: file names, checked partial files, and `results.json` (no I/O on the network)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from .errors import JobNotSucceeded, SamiClientError, SamiConnectionError
from .models import Job, StemResult

MANIFEST = "results.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def filename(stem: str, result: StemResult) -> str:
    """`<stem>.<ext>`, the stem's name made safe as one file name (no folders, no leading dot)."""
    safe = _UNSAFE.sub("_", stem).lstrip(".") or "stem"
    extension = _UNSAFE.sub("", result.format or "") or "bin"
    return f"{safe}.{extension}"


def require_succeeded(job: Job) -> None:
    if not job.succeeded:
        raise JobNotSucceeded(f"job {job.id} is {job.status}, not succeeded: it has no results", job)


def cut_short(job: Job, stem: str, problem: Exception) -> SamiClientError:
    """What a stem read as it was computed, and cut short by `problem`, raises: JobNotSucceeded when the
    job (read again) failed or was cancelled, else a connection error."""
    if job.is_terminal and not job.succeeded:
        return JobNotSucceeded(f"job {job.id} is {job.status}: {stem} was cut short", job)
    return SamiConnectionError(f"the download of {stem} of job {job.id} was cut short: {problem}")


def to_fetch(job: Job) -> dict[str, StemResult]:
    """The stems with a file kept by the gateway (those sent to custom storage are skipped)."""
    return {stem: result for stem, result in (job.result or {}).items() if not result.is_copied}


class PartFile:
    """A file written as `<path>.part`, hashed on the way, renamed into place only once complete and right."""

    def __init__(self, path: Path, sha256: str | None = None, size: int | None = None) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.expected_sha256 = sha256
        self.expected_size = size
        self.hash = hashlib.sha256()
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: BinaryIO = open(self.part, "wb")  # closed by finish() or abort()

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> Path:
        """Close, check size and sha256 against the result's description, and rename into place."""
        self.file.close()
        problem = None
        if self.expected_size is not None and self.size != self.expected_size:
            problem = f"{self.size} bytes received, {self.expected_size} announced"
        elif self.expected_sha256 and self.hash.hexdigest() != self.expected_sha256.lower():
            problem = "its sha256 differs from the one announced"
        if problem is not None:
            self.part.unlink(missing_ok=True)
            raise SamiClientError(f"download of {self.path.name} is corrupt: {problem}")
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        self.file.close()
        self.part.unlink(missing_ok=True)


def manifest(job: Job, written: dict[str, Path], folder: Path) -> dict[str, Any]:
    """What `results.json` says: the job, and per stem its file (relative) and description, or `copied_to`."""
    stems: dict[str, Any] = {}
    for stem, result in (job.result or {}).items():
        if result.is_copied:
            stems[stem] = {"copied_to": result.copied_to}
        elif stem in written:
            stems[stem] = {"file": written[stem].relative_to(folder).as_posix(), "format": result.format,
                           "size": written[stem].stat().st_size, "sha256": result.sha256,
                           "duration": result.duration}
    return {"id": job.id, "name": job.name, "status": job.status, "model": job.model, "stems": list(job.stems),
            "output": dict(job.output), "metadata": dict(job.metadata), "completed_at": job.completed_at,
            "results": stems}


def write_manifest(job: Job, written: dict[str, Path], folder: Path) -> Path:
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest(job, written, folder), indent=2) + "\n", encoding="utf-8")
    return path
