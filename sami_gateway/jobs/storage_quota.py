"""What one appkey may keep in the Jobs API's storage: bytes, uploads and jobs, and the check.

The job store counts what an appkey holds (`StorageUsage`) and checks a new upload, upload's bytes
or job against the appkey's `StorageLimits` in the same step as it writes it, so two requests at
once cannot both take the last room. Past a limit: 429 `StorageQuotaExceeded`, whose error JSON
names what is full.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config.jobs import JobSettings, job_settings
from ..errors import Code, GatewayError

# Room comes back when the appkey deletes something (it may retry at once then) or when something of
# it expires, hours after it was made by default: an earlier retry would rarely find any.
RETRY_AFTER_SECONDS = 300
DEFAULT_SHARE = 4  # by default an appkey may hold a quarter of the data folder's disk
NAMES = {"stored_bytes": "bytes", "uploads": "uploads", "jobs": "jobs"}  # as the error JSON says them


@dataclass(frozen=True)
class StorageUsage:
    """What an appkey holds: bytes of its uploads and jobs (inputs and results), uploads (also those
    not PUT yet) and jobs (of every status)."""

    stored_bytes: int = 0
    uploads: int = 0
    jobs: int = 0


@dataclass(frozen=True)
class StorageLimits:
    """The most an appkey may hold of each."""

    stored_bytes: int
    uploads: int
    jobs: int

    def overridden(self, own: Mapping[str, int]) -> StorageLimits:
        """These limits with an appkey's own (fields of this class) in place of the defaults."""
        return replace(self, **own)


class StorageQuotaExceeded(GatewayError):
    """The appkey would hold more than its quota allows of `exceeded` (bytes, uploads or jobs)."""

    code = Code.STORAGE_QUOTA_EXCEEDED

    def __init__(self, exceeded: str, held: int, limit: int, adding: int = 0) -> None:
        asked = f" + {adding} more" if adding else ""
        super().__init__(f"the appkey's storage quota is full: {exceeded}: it holds {held}{asked}, at most {limit}; "
                         "delete jobs or wait for uploads and jobs to expire",
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.quota = {"exceeded": exceeded, "held": held, "limit": limit}


def exceeded(held: StorageUsage, adding: StorageUsage, limits: StorageLimits) -> StorageQuotaExceeded | None:
    """What refuses adding `adding` to `held` under `limits`, None when it fits. Whatever is added
    counts as at least one byte: a new job or upload is refused once the appkey's bytes are used up
    (a job's results come later, and an empty upload slot is filled later)."""
    if held.stored_bytes + max(adding.stored_bytes, 1) > limits.stored_bytes:
        return StorageQuotaExceeded("bytes", held.stored_bytes, limits.stored_bytes, adding.stored_bytes)
    for field in ("uploads", "jobs"):
        more, have, most = getattr(adding, field), getattr(held, field), getattr(limits, field)
        if more and have + more > most:
            return StorageQuotaExceeded(NAMES[field], have, most, more)
    return None


def over(held: StorageUsage, limits: StorageLimits) -> StorageQuotaExceeded | None:
    """Whether the appkey holds more bytes than its quota (its results may take it past): its
    queued jobs are not run then."""
    if held.stored_bytes > limits.stored_bytes:
        return StorageQuotaExceeded("bytes", held.stored_bytes, limits.stored_bytes)
    return None


def default_storage_bytes(data_dir: Path) -> int:
    """A quarter of the size of the data folder's disk. Its size, not its free space: free space
    depends on the moment it is measured, and a gateway started again on a full disk would leave
    every appkey without room (failing the jobs it found queued) until its next start."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return max(1, shutil.disk_usage(existing).total // DEFAULT_SHARE)


def default_limits(settings: JobSettings) -> StorageLimits:
    """The limits of an appkey without its own: the settings', the bytes measured when not set."""
    stored = settings.storage_bytes_per_appkey or default_storage_bytes(settings.data_dir)
    return StorageLimits(stored, settings.max_uploads_per_appkey, settings.max_stored_jobs_per_appkey)


class AppkeyStorageLimits:
    """Each appkey's limits: its own (`[appkeys.K] storage_bytes`, `max_uploads`, `max_stored_jobs`)
    where it has them, else the defaults. A configuration reload (SIGHUP) replaces both."""

    def __init__(self, config: Any) -> None:
        self.replace(config)

    def replace(self, config: Any) -> None:
        self._appkeys, self._defaults = config.appkeys, default_limits(job_settings(config))

    def __call__(self, appkey: str) -> StorageLimits:
        rule = self._appkeys.get(appkey)
        return self._defaults.overridden(rule.storage if rule is not None else {})
