"""What the Jobs API counts and measures from its store: transitions, failures, the queue's depth and age."""

from __future__ import annotations

import time

from ..runtime.metrics import Metrics
from .model import Job
from .service import JobService


def count_transition(metrics: Metrics, job: Job) -> None:
    metrics.job_transitions.labels(job.status.value).inc()
    if job.error is not None:
        metrics.job_failures.labels(str(job.error.status_code)).inc()


async def set_queue_gauges(jobs: JobService, metrics: Metrics) -> None:
    """Queued jobs and the oldest one's age, read from the store."""
    heads = await jobs.store.queue_heads()
    oldest = await jobs.store.oldest_queued()
    metrics.jobs_queued.set(sum(head.queued for head in heads))
    metrics.oldest_queued.set(0 if oldest is None else max(0.0, time.time() - oldest))
