"""The Jobs API's service as fronts and workers build it in scale-out mode: its state in Redis,
its files in S3-compatible storage; and the queue gauges both roles export."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from ..config import Config
from ..config.cluster import ClusterSettings
from ..config.jobs import job_settings
from ..jobs.service import JobService
from ..jobs.setup import job_namespace, set_queue_gauges
from ..jobs.signing import UrlSigner
from ..jobs.storage_quota import AppkeyStorageLimits
from ..jobs.webhooks import WebhookSecrets
from ..metrics import Metrics
from ..namespace import Namespace
from .redis_store import RedisJobStore
from .s3_blobs import ReadKey, S3BlobStore
from .workqueue import RedisWorkQueue


def build_cluster_service(config: Config, client: aioredis.Redis, namespaces: dict[str, Namespace[Any]],
                          settings: ClusterSettings, secrets: WebhookSecrets,
                          storage_limits: AppkeyStorageLimits) -> JobService:
    jobs = job_settings(config)
    name, namespace = job_namespace(namespaces)
    read_key = (ReadKey(settings.storage_read_access_key_id, settings.storage_read_secret_access_key)
                if settings.storage_read_access_key_id else None)
    blobs = S3BlobStore(settings.bucket, settings.prefix, jobs.data_dir, settings.storage_public_url, read_key)
    return JobService(RedisJobStore(client), blobs, jobs, UrlSigner(config.token_secret), namespace, name,
                      secrets, config.max_input_bytes, f"http://{config.host}:{config.port}",
                      storage_limits=storage_limits)


async def publish_gauges(queue: RedisWorkQueue, service: JobService, metrics: Metrics) -> int:
    """The shared queue's depth and age per class, workers alive, and the Jobs API's queued jobs,
    from Redis into `metrics`; the number of workers alive."""
    for cls, depth in (await queue.depth()).items():
        metrics.work_queued.labels(cls).set(depth.queued)
        metrics.work_oldest.labels(cls).set(depth.oldest_age)
    await set_queue_gauges(service, metrics)
    alive = await queue.workers_alive()
    metrics.workers_alive.set(alive)
    return alive
