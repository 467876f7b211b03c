"""The Jobs API's service as fronts and workers build it in scale-out mode: its state in Redis,
its files in S3-compatible storage; and the queue gauges both roles export."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from ..auth import Authenticator, TokenService
from ..config import Config
from ..jobs.service import JobService
from ..jobs.settings import job_settings
from ..jobs.setup import job_namespace, set_queue_gauges
from ..jobs.signing import UrlSigner
from ..jobs.storage_quota import default_limits
from ..metrics import Metrics
from ..namespace import Namespace
from .redis_store import RedisJobStore
from .s3_blobs import S3BlobStore
from .settings import ClusterSettings
from .workqueue import WorkQueue


def build_cluster_service(config: Config, client: aioredis.Redis, namespaces: dict[str, Namespace[Any]],
                          settings: ClusterSettings) -> JobService:
    jobs = job_settings(config)
    name, namespace = job_namespace(namespaces)
    auth = Authenticator(config.appkeys, TokenService.from_config(config), namespaces, config.default_quota)
    blobs = S3BlobStore(settings.bucket, settings.prefix, jobs.data_dir, settings.storage_public_url)
    defaults = default_limits(jobs)  # SAMI_STORAGE_BYTES_PER_APPKEY, else measured on this process's data_dir
    return JobService(RedisJobStore(client), blobs, jobs, UrlSigner(config.token_secret), namespace, name,
                      lambda appkey: auth.webhook_secret(appkey, jobs.webhook_secret), config.max_input_bytes,
                      f"http://{config.host}:{config.port}",
                      storage_limits=lambda appkey: defaults.overridden(auth.storage_overrides(appkey)))


async def publish_gauges(queue: WorkQueue, service: JobService, metrics: Metrics) -> int:
    """The shared queue's depth and age per class, workers alive, and the Jobs API's queued jobs,
    from Redis into `metrics`; the number of workers alive."""
    for cls, depth in (await queue.depth()).items():
        metrics.work_queued.labels(cls).set(depth.queued)
        metrics.work_oldest.labels(cls).set(depth.oldest_age)
    await set_queue_gauges(service, metrics)
    alive = await queue.workers_alive()
    metrics.workers_alive.set(alive)
    return alive
