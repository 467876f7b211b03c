"""The scale-out settings: where the shared queue and storage are, and how workers hold their work.

A section of the core's configuration (`Config.sections["cluster"]`). With neither URL set the
gateway is the single process of SQLite and local files; with both, `serve` is a stateless front
and `worker` runs the work. The S3 endpoint and credentials come from the standard `AWS_*`
variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`); the
result URLs clients download from may be signed by a second, read-only identity instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .settings import ConfigError, Section, Setting, bounded_int, http_url, positive


@dataclass(frozen=True)
class ClusterSettings:
    """What the fronts and workers read from the configuration."""

    queue_url: str = ""
    storage_url: str = ""
    storage_public_url: str = ""
    storage_read_access_key_id: str = ""
    storage_read_secret_access_key: str = field(default="", repr=False)
    worker_host: str = "127.0.0.1"
    worker_port: int = 9101
    work_lease: float = 15.0

    def __post_init__(self) -> None:
        if bool(self.storage_read_access_key_id) != bool(self.storage_read_secret_access_key):
            raise ConfigError("SAMI_STORAGE_READ_ACCESS_KEY_ID and SAMI_STORAGE_READ_SECRET_ACCESS_KEY go together: "
                              "set both or neither")

    @property
    def enabled(self) -> bool:
        return bool(self.queue_url)

    @property
    def bucket(self) -> str:
        return urlsplit(self.storage_url).netloc

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without slashes at either end ('' for the whole bucket)."""
        return urlsplit(self.storage_url).path.strip("/")


def _redis_url(value: Any) -> str:
    text = str(value)
    if text and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return text


def _s3_url(value: Any) -> str:
    text = str(value)
    if text and (urlsplit(text).scheme != "s3" or not urlsplit(text).netloc):
        raise ValueError("must be s3://BUCKET or s3://BUCKET/PREFIX")
    return text


SETTINGS = Section("cluster", (
    Setting("queue_url", _redis_url, "Redis for the shared queue, job state and quotas (scale-out; "
            "needs SAMI_STORAGE_URL too)"),
    Setting("storage_url", _s3_url, "S3-compatible storage for inputs and results, s3://BUCKET/PREFIX "
            "(endpoint and credentials: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"),
    Setting("storage_public_url", http_url, "the storage endpoint as clients reach it, for presigned result "
            "URLs (default: AWS_ENDPOINT_URL)"),
    Setting("storage_read_access_key_id", str, "access key of an identity that may only read the bucket, to sign "
            "the result URLs clients download with (unset: the gateway's own, which may also write and delete)"),
    Setting("storage_read_secret_access_key", str, "secret key of SAMI_STORAGE_READ_ACCESS_KEY_ID", secret=True),
    Setting("worker_host", str, "address of a worker's /healthz and /metrics"),
    Setting("worker_port", bounded_int(0, 65535), "port of a worker's /healthz and /metrics"),
    Setting("work_lease", positive(float), "seconds a worker holds work without renewing it; then another "
            "worker takes it over"),
), ClusterSettings)


def cluster_settings(config: Any) -> ClusterSettings:
    """The cluster section of a `Config` (its defaults for a Config built by hand, as in tests)."""
    settings = getattr(config, "sections", {}).get(SETTINGS.name)
    return settings if isinstance(settings, ClusterSettings) else ClusterSettings()
