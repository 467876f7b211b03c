"""The Jobs API's part of the app: its service, store, work loop, webhooks and sweeper, and their lifetime."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ..config import Config
from ..config.jobs import job_settings
from ..metrics import Metrics
from ..namespace import JobNamespace, Namespace
from ..state import CONFIG, FETCHER, METRICS, NAMESPACES, RELOADERS
from ..work.loop import WorkLoop
from ..work.queue import BATCH, JOB, holder_name
from .blobs import LocalBlobStore
from .http import JOBS
from .model import Job, JobStatus
from .routes import add_job_routes
from .runner import JobRunner
from .service import JobService
from .signing import UrlSigner
from .sqlite_store import SqliteJobStore
from .storage_quota import AppkeyStorageLimits, StorageLimits
from .sweeper import Sweeper
from .webhooks import WebhookSecrets, WebhookSender

GAUGE_SECONDS = 5.0  # queue depth, oldest age and jobs running are read this often


def job_namespace(namespaces: dict[str, Namespace[Any]]) -> tuple[str, JobNamespace[Any] | None]:
    """The first namespace that runs jobs (its name is what a Bearer token must be allowed)."""
    for name, namespace in namespaces.items():
        if isinstance(namespace, JobNamespace):
            return name, namespace
    return next(iter(namespaces), ""), None


def build_service(config: Config, store: SqliteJobStore, namespaces: dict[str, Namespace[Any]],
                  webhook_secret: WebhookSecrets, storage_limits: Callable[[str], StorageLimits]) -> JobService:
    """The service over SQLite and local files."""
    settings = job_settings(config)
    name, namespace = job_namespace(namespaces)
    return JobService(store, LocalBlobStore(settings.data_dir),
                      settings, UrlSigner(config.token_secret), namespace, name, webhook_secret,
                      config.max_input_bytes, f"http://{config.host}:{config.port}", storage_limits=storage_limits)


def count_transition(metrics: Metrics, job: Job) -> None:
    metrics.job_transitions.labels(job.status.value).inc()
    if job.error is not None:
        metrics.job_failures.labels(str(job.error.status_code)).inc()


async def set_queue_gauges(service: JobService, metrics: Metrics) -> None:
    """Queued jobs and the oldest one's age, read from the store."""
    heads = await service.store.queue_heads()
    oldest = await service.store.oldest_queued()
    metrics.jobs_queued.set(sum(head.queued for head in heads))
    metrics.oldest_queued.set(0 if oldest is None else max(0.0, time.time() - oldest))


def follow_jobs(loop: WorkLoop) -> Callable[[Job], None]:
    """A listener of the service: a queued job wakes the loop, one cancelled or deleted is dropped from it."""
    def follow(job: Job) -> None:
        if job.status is JobStatus.QUEUED:
            loop.wake()
        elif job.status.terminal:
            loop.drop(job.id)  # its remaining model calls go
    return follow


async def _jobs_ctx(app: web.Application, store: SqliteJobStore) -> AsyncIterator[None]:
    service, metrics, fetcher = app[JOBS], app[METRICS], app[FETCHER]
    await service.blobs.open()
    await store.open()
    runner = JobRunner(service, fetcher, lambda report: metrics.record_run(service.namespace_name, report))
    loop = WorkLoop(store.work_queue(holder_name()), {JOB: runner}, {BATCH: service.settings.job_workers},
                    service.settings.max_job_attempts, metrics)

    async def gauges() -> None:
        await set_queue_gauges(service, metrics)
        metrics.jobs_running.set(loop.holding(kind=JOB))

    loop.add_round(gauges, GAUGE_SECONDS)
    sender = WebhookSender(service.store, fetcher, service.webhook_secret, service.settings.webhook_timeout,
                           service.settings.webhook_retry_delays,
                           lambda outcome: metrics.webhook_attempts.labels(outcome).inc())
    service.on_change.append(follow_jobs(loop))
    service.on_change.append(sender.on_change)
    service.on_change.append(lambda job: count_transition(metrics, job))
    service.on_event_dropped = lambda job: metrics.webhook_events_dropped.inc()
    sweeper = Sweeper(service)
    await sweeper.start()
    loop.start()
    sender.start()
    try:
        yield
    finally:
        await sender.stop()
        await loop.stop(grace=0)  # what runs is handed back at once: the next start runs it first
        await sweeper.stop()
        await store.close()


def add_jobs(app: web.Application) -> None:
    """Routes and resources of the Jobs API (after the namespaces' context: jobs need their models)."""
    config = app[CONFIG]
    secrets = WebhookSecrets(config)
    storage_limits = AppkeyStorageLimits(config)
    app[RELOADERS].extend([secrets.replace, storage_limits.replace])
    settings = job_settings(config)
    store = SqliteJobStore(settings.data_dir / "jobs.sqlite3")
    app[JOBS] = build_service(config, store, app[NAMESPACES], secrets, storage_limits)
    app.cleanup_ctx.append(functools.partial(_jobs_ctx, store=store))
    add_job_routes(app)




def add_cluster_jobs(app: web.Application, front: Any) -> None:
    """The Jobs API of a scale-out front: the same routes over the front's shared service; the
    jobs run, their webhooks go out and they expire on the workers."""
    app[JOBS] = front.service
    app[RELOADERS].extend([front.secrets.replace, front.storage_limits.replace])
    app.cleanup_ctx.append(front.context)
    add_job_routes(app)
