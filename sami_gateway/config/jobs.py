"""The Jobs API's settings: where it keeps its data, how long, how much, and how webhooks are signed.

A section of the core's configuration (`Config.sections["jobs"]`), read from the same `SAMI_*`
variables and TOML file as the rest (top level or a `[jobs]` table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import Section, Setting, bounded_int, http_url, positive

MIN_WEBHOOK_SECRET_LENGTH = 16  # an HMAC key shorter than this is guessable


def user_data_dir(environ: Mapping[str, str]) -> Path:
    """This project's directory in the platform's user data ($XDG_DATA_HOME, else ~/.local/share)."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sami-gateway"


@dataclass(frozen=True)
class JobSettings:
    """What the Jobs API reads from the configuration."""

    data_dir: Path = Path("~/.local/share/sami-gateway")
    job_ttl: float = 24 * 3600.0
    upload_ttl: float = 3600.0
    signed_url_ttl: float = 3600.0
    max_queued_jobs: int = 1000
    max_queued_jobs_per_appkey: int = 200
    storage_bytes_per_appkey: int | None = None  # None: a quarter of data_dir's disk (`default_storage_bytes`)
    max_uploads_per_appkey: int = 1000
    max_stored_jobs_per_appkey: int = 10_000
    job_workers: int = 2
    job_timeout: float = 3600.0
    max_job_attempts: int = 3
    webhook_secret: str = ""
    webhook_timeout: float = 10.0
    webhook_retry_delays: tuple[float, ...] = (10.0, 30.0, 60.0, 300.0, 900.0)
    public_url: str = ""


def _secret(value: Any) -> str:
    text = str(value)
    if text and len(text) < MIN_WEBHOOK_SECRET_LENGTH:
        raise ValueError(f"needs at least {MIN_WEBHOOK_SECRET_LENGTH} characters")
    return text


def _delays(value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    delays = tuple(float(item) for item in items)
    if not delays or any(delay <= 0 for delay in delays):
        raise ValueError("must be positive seconds, comma-separated")
    return delays


SETTINGS = Section("jobs", (
    Setting("data_dir", lambda v: Path(v).expanduser(),
            "where jobs, uploads, results and the stem cache are kept (SQLite and files)",
            "$XDG_DATA_HOME/sami-gateway"),
    Setting("job_ttl", positive(float), "seconds a finished job and its files are kept"),
    Setting("upload_ttl", positive(float), "seconds an upload is kept after its PUT"),
    Setting("signed_url_ttl", positive(float), "seconds a signed upload or result URL stays valid"),
    Setting("max_queued_jobs", positive(int), "jobs queued at once, all appkeys; more are refused 503"),
    Setting("max_queued_jobs_per_appkey", positive(int), "jobs one appkey may have queued; more are refused 429"),
    Setting("storage_bytes_per_appkey", positive(int),
            "bytes one appkey may keep: its uploads, and its jobs' inputs and results; a new upload or job past "
            "it is refused 429, and its queued jobs fail instead of running while it is over "
            "(`[appkeys.K] storage_bytes`); set it where data_dir's disk holds other data too",
            "data_dir's disk size / 4"),
    Setting("max_uploads_per_appkey", positive(int),
            "uploads one appkey may keep, PUT or not; more are refused 429 (`[appkeys.K] max_uploads`)"),
    Setting("max_stored_jobs_per_appkey", positive(int),
            "jobs one appkey may keep, of any status, until they expire or are deleted; more are refused 429 "
            "(`[appkeys.K] max_stored_jobs`)"),
    Setting("job_workers", bounded_int(1, 64), "jobs run at once (their model calls interleave)"),
    Setting("job_timeout", positive(float), "seconds one run of a job may take before it fails"),
    Setting("max_job_attempts", bounded_int(1, 20), "runs of a job cut short by a crash before it is failed"),
    Setting("webhook_secret", _secret, "HMAC key for webhook signatures (per appkey: `[appkeys.K] webhook_secret`)",
            secret=True),
    Setting("webhook_timeout", positive(float), "seconds a webhook receiver has to answer"),
    Setting("webhook_retry_delays", _delays, "seconds between failed webhook attempts, then hourly for a day"),
    Setting("public_url", http_url, "the gateway's URL as clients reach it, for signed URLs "
            "(default: the request's own origin; webhooks: http://HOST:PORT)"),
), JobSettings, lambda environ: {"data_dir": user_data_dir(environ)})


def job_settings(config: Any) -> JobSettings:
    """The Jobs API's section of a `Config` (its defaults for a Config built by hand, as in tests)."""
    sections = getattr(config, "sections", {})
    settings = sections.get(SETTINGS.name)
    return settings if isinstance(settings, JobSettings) else JobSettings(**SETTINGS.defaults({}))


# `[appkeys.K]` keys of an appkey's own storage limits, and the fields of StorageLimits they set.
LIMIT_NAMES = {"storage_bytes": "stored_bytes", "max_uploads": "uploads", "max_stored_jobs": "jobs"}


def parse_overrides(spec: Mapping[str, Any], appkey: str) -> dict[str, int]:
    """An `[appkeys.K]` table's storage limits (`storage_bytes`, `max_uploads`, `max_stored_jobs`),
    as fields of `StorageLimits`."""
    own = {}
    for key, field in LIMIT_NAMES.items():
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"appkey {appkey!r}: {key} must be a positive integer")
            own[field] = value
    return own
