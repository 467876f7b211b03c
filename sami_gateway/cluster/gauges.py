"""The shared queue's gauges, exported by fronts and workers alike."""

from __future__ import annotations

from ..jobs.gauges import set_queue_gauges
from ..jobs.service import JobService
from ..runtime.metrics import Metrics
from .workqueue import RedisWorkQueue


async def publish_gauges(queue: RedisWorkQueue, jobs: JobService, metrics: Metrics) -> int:
    """The shared queue's depth and age per class, workers alive, and the Jobs API's queued jobs,
    from Redis into `metrics`; the number of workers alive."""
    for cls, depth in (await queue.depth()).items():
        metrics.work_queued.labels(cls).set(depth.queued)
        metrics.work_oldest.labels(cls).set(depth.oldest_age)
    await set_queue_gauges(jobs, metrics)
    alive = await queue.workers_alive()
    metrics.workers_alive.set(alive)
    return alive
