"""The one composition root: what each role is built from, and the order its parts start and stop.

A role is one of three: the single process (`serve`: HTTP, the SQLite store and queue, local
files, and the work loop running jobs), a front (`serve` with `SAMI_QUEUE_URL`: HTTP over Redis
and S3-compatible storage, running nothing), and a worker (`worker`: the work loop over Redis,
running invokes and jobs). Each part is built once here, in one place per part, and handed to
whoever needs it; what the roles share (metrics, the scheduler, outbound HTTP, the job service,
webhooks, the sweeper, the reloadable secrets) is built by the same lines for all three.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from ..auth.quota import Quotas, QuotaTracker
from ..cluster import keys
from ..cluster.front import ClusterFront
from ..cluster.gauges import publish_gauges
from ..cluster.orphans import OrphanSweeper, orphan_grace
from ..cluster.redis_client import redis_client
from ..cluster.redis_store import RedisJobStore
from ..cluster.s3_blobs import ReadKey, S3BlobStore
from ..cluster.worker_invokes import InvokeHandler
from ..cluster.worker_signals import WorkerSignals
from ..cluster.workqueue import RedisWorkQueue
from ..config import Config, ConfigError, load_config
from ..config.cluster import cluster_settings
from ..config.jobs import job_settings
from ..jobs.blobs import BlobStore, LocalBlobStore
from ..jobs.gauges import count_transition, set_queue_gauges
from ..jobs.local.sqlite_store import SqliteJobStore
from ..jobs.model import Job, JobStatus
from ..jobs.runner import JobRunner
from ..jobs.service import JobService
from ..jobs.signing import UrlSigner
from ..jobs.storage_quota import AppkeyStorageLimits
from ..jobs.store import JobStore
from ..jobs.sweeper import Sweeper
from ..jobs.webhooks import WebhookSecrets, WebhookSender
from ..runtime.metrics import Metrics
from ..runtime.namespace import JobNamespace, Namespace, load_namespaces
from ..runtime.outbound import FetchPolicy, OutboundHttp
from ..runtime.scheduler import Limits, Scheduler
from ..web.state import Readiness
from ..work.loop import WorkLoop
from ..work.queue import BATCH, INTERACTIVE, JOB, WorkQueue, holder_name

log = logging.getLogger(__name__)
GAUGE_SECONDS = 5.0  # queue depth, oldest age and work held are read this often


class Role(enum.Enum):
    SINGLE = "single"  # one process: HTTP, store, files and the work loop
    FRONT = "front"  # HTTP over Redis and storage; invokes and jobs run on workers
    WORKER = "worker"  # the work loop over Redis: runs invokes and jobs

    @classmethod
    def serving(cls, config: Config) -> Role:
        """The role of `sami-gateway serve` under `config`."""
        return cls.FRONT if cluster_settings(config).enabled else cls.SINGLE


Step = Callable[[], Awaitable[object] | object]


class Lifetime:
    """Parts started in the order they were added and stopped in reverse; a part that fails to
    stop is logged and the others still stop."""

    def __init__(self) -> None:
        self._parts: list[tuple[Step | None, Step | None]] = []
        self._started: list[Step | None] = []

    def add(self, start: Step | None, stop: Step | None = None) -> None:
        self._parts.append((start, stop))

    async def start(self) -> None:
        for start, stop in self._parts:
            if start is not None:
                await _awaited(start())
            self._started.append(stop)

    async def stop(self) -> None:
        while self._started:
            stop = self._started.pop()
            try:
                if stop is not None:
                    await _awaited(stop())
            except Exception:  # noqa: BLE001 - the parts started before it must still stop
                log.exception("stopping %s failed", getattr(stop, "__qualname__", stop))


async def _awaited(value: Awaitable[object] | object) -> None:
    if inspect.isawaitable(value):
        await value


@dataclass
class Services:
    """Everything one role runs on, built by `build_services`; `start`/`stop` run its lifetime."""

    role: Role
    config: Config
    namespaces: dict[str, Namespace[Any]]  # as this role serves them: a front's send their runs to workers
    metrics: Metrics
    scheduler: Scheduler
    outbound: OutboundHttp
    quotas: Quotas
    secrets: WebhookSecrets
    storage_limits: AppkeyStorageLimits
    jobs: JobService
    queue: WorkQueue
    readiness: Readiness = field(default_factory=Readiness)
    client: aioredis.Redis | None = None  # scale-out's Redis
    loop: WorkLoop | None = None  # the single process and a worker
    sweeper: Sweeper | None = None
    front: ClusterFront | None = None
    signals: WorkerSignals | None = None
    orphans: OrphanSweeper | None = None
    lifetime: Lifetime = field(default_factory=Lifetime)
    grace: float = 0.0  # what a stop gives running work to finish, set by `stop`

    def reload(self, config: Config) -> None:
        """SIGHUP: what every role keeps of the configuration beside HTTP's own (webhook secrets,
        storage limits) is replaced."""
        self.secrets.replace(config)
        self.storage_limits.replace(config)

    async def start(self) -> None:
        await self.lifetime.start()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every part; what runs gets `grace` seconds (default SAMI_SHUTDOWN_GRACE) to finish."""
        self.grace = self.config.shutdown_grace if grace is None else grace
        await self.lifetime.stop()


def reread(flags: Mapping[str, Any]) -> Config | None:
    """The configuration read again for a reload; a bad one is logged (and None returned) so that the
    running one is kept."""
    try:
        return load_config(flags)
    except ConfigError as exc:
        log.error("configuration reload refused, keeping the running one: %s", exc)
        return None


def build_services(config: Config, role: Role, namespaces: dict[str, Namespace[Any]] | None = None) -> Services:
    """The parts of `role`; `namespaces` replaces the configured plugins (tests)."""
    if namespaces is None:
        namespaces = load_namespaces(config)
    settings = job_settings(config)
    metrics = Metrics(namespaces)
    limits = Limits(config.max_jobs, config.max_queued_seconds, config.max_held_bytes)
    scheduler = Scheduler(limits, on_task_done=metrics.task_done, nice=config.worker_nice)
    metrics.watch(scheduler)
    outbound = OutboundHttp(FetchPolicy.from_entries(config.fetch_allow), config.fetch_connect_timeout,
                            config.fetch_timeout)
    secrets, storage_limits = WebhookSecrets(config), AppkeyStorageLimits(config)
    client: aioredis.Redis | None = None
    store: JobStore
    queue: WorkQueue
    blobs: BlobStore
    if role is Role.SINGLE:
        sqlite = SqliteJobStore(settings.data_dir / "jobs.sqlite3")
        store, blobs, queue = sqlite, LocalBlobStore(settings.data_dir), sqlite.work_queue(holder_name())
    else:
        cluster = cluster_settings(config)
        if not cluster.storage_url:
            raise ValueError("SAMI_QUEUE_URL needs SAMI_STORAGE_URL too (inputs and results go to S3 storage)")
        client = redis_client(cluster.queue_url)
        read_key = (ReadKey(cluster.storage_read_access_key_id, cluster.storage_read_secret_access_key)
                    if cluster.storage_read_access_key_id else None)
        store = RedisJobStore(client)
        blobs = S3BlobStore(cluster.bucket, cluster.prefix, settings.data_dir, cluster.storage_public_url, read_key)
        name = ("front-" if role is Role.FRONT else "") + holder_name()
        queue = RedisWorkQueue(client, name, cluster.work_lease)
    name, job_namespace = first_job_namespace(namespaces)
    jobs = JobService(store, blobs, settings, UrlSigner(config.token_secret), job_namespace, name, secrets,
                      config.max_job_input_bytes, f"http://{config.host}:{config.port}", storage_limits=storage_limits)
    services = Services(role, config, namespaces, metrics, scheduler, outbound, QuotaTracker(), secrets,
                        storage_limits, jobs, queue, client=client)
    _add_common_parts(services)
    if role is Role.FRONT:
        _add_front(services)
    else:
        _add_work(services)
    return services


def first_job_namespace(namespaces: dict[str, Namespace[Any]]) -> tuple[str, JobNamespace[Any] | None]:
    """The first namespace that runs jobs (its name is what a Bearer token must be allowed)."""
    for name, namespace in namespaces.items():
        if isinstance(namespace, JobNamespace):
            return name, namespace
    return next(iter(namespaces), ""), None


def _add_common_parts(services: Services) -> None:
    lifetime, ready = services.lifetime, services.readiness

    def scheduler_started() -> None:
        services.scheduler.start()
        ready.admitting = True

    async def scheduler_drained() -> None:
        ready.admitting = False
        await services.scheduler.drain(services.grace)
        services.scheduler.close()

    lifetime.add(services.outbound.open, services.outbound.close)
    lifetime.add(scheduler_started, scheduler_drained)
    if services.role is not Role.FRONT:  # a front's namespaces load nothing: the workers hold the models
        namespaces = NamespacesPart(services)
        lifetime.add(namespaces.start, namespaces.stop)
    else:
        ready.models_loaded = True
    if services.client is not None:
        lifetime.add(None, services.client.aclose)
    lifetime.add(services.jobs.blobs.open)
    lifetime.add(services.jobs.store.open, services.jobs.store.close)


class NamespacesPart:
    """The namespaces started (models loaded, their load times recorded) and stopped in reverse."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._started: list[Namespace[Any]] = []

    async def start(self) -> None:
        services = self._services
        for namespace in services.namespaces.values():
            await namespace.start(services.scheduler)
            self._started.append(namespace)
            for model, seconds in namespace.load_seconds().items():
                services.metrics.model_load.labels(model).set(seconds)
        services.readiness.models_loaded = True

    async def stop(self) -> None:
        while self._started:
            await self._started.pop().stop()


def _add_front(services: Services) -> None:
    assert services.client is not None and isinstance(services.queue, RedisWorkQueue)
    front = ClusterFront(services.config, services.client, services.queue, services.namespaces, services.metrics,
                         services.jobs)
    services.front, services.namespaces, services.quotas = front, front.namespaces, front.quotas
    services.lifetime.add(front.start, front.stop)


def _add_work(services: Services) -> None:
    """The work loop with its handlers, webhooks, the sweeper and, on a worker, what it hears."""
    config, jobs, metrics = services.config, services.jobs, services.metrics
    runner = JobRunner(jobs, services.outbound, lambda report: metrics.record_run(jobs.namespace_name, report))
    handlers: dict[str, Any] = {JOB: runner}
    capacity = {BATCH: jobs.settings.job_workers}
    if services.role is Role.WORKER:
        assert services.client is not None
        handlers[keys.INVOKE] = InvokeHandler(services.client, services.namespaces, metrics, config.request_timeout)
        capacity[INTERACTIVE] = config.max_jobs
    loop = services.loop = WorkLoop(services.queue, handlers, capacity, jobs.settings.max_job_attempts, metrics)
    sender = WebhookSender(jobs.store, services.outbound, jobs.webhook_secret, jobs.settings.webhook_timeout,
                           jobs.settings.webhook_retry_delays,
                           lambda outcome: metrics.webhook_attempts.labels(outcome).inc())
    jobs.on_change.append(sender.on_change)
    jobs.on_change.append(lambda job: count_transition(metrics, job))
    jobs.on_event_dropped = lambda job: metrics.webhook_events_dropped.inc()
    sweeper = services.sweeper = Sweeper(jobs)
    if services.role is Role.SINGLE:
        jobs.on_change.append(follow_jobs(loop))
        loop.add_round(lambda: local_gauges(services), GAUGE_SECONDS)
        services.lifetime.add(sweeper.start, sweeper.stop)
    else:
        assert services.client is not None and isinstance(services.queue, RedisWorkQueue)
        signals = services.signals = WorkerSignals(services.client, loop, jobs)
        orphans = services.orphans = OrphanSweeper(services.client, sweeper, services.queue.name, orphan_grace(config))
        loop.add_round(lambda: worker_gauges(services), GAUGE_SECONDS)
        services.lifetime.add(signals.start, signals.stop)
        # Fronts write inputs before their jobs exist: only one worker at a time, past a grace, sweeps
        # the storage's orphans (`cluster/orphans.py`).
        services.lifetime.add(lambda: sweeper.start(orphans=False), sweeper.stop)
        services.lifetime.add(orphans.start, orphans.stop)
    services.lifetime.add(sender.start, sender.stop)
    # The single process hands back what runs at once (its next start runs it first); a worker lets
    # it finish within the grace, then hands the rest to another worker.
    services.lifetime.add(loop.start, lambda: loop.stop(0.0 if services.role is Role.SINGLE else services.grace))


def follow_jobs(loop: WorkLoop) -> Callable[[Job], None]:
    """A listener of the single process's service: a queued job wakes the loop, one cancelled or
    deleted is dropped from it (a worker hears the same through Redis: `cluster/worker_signals.py`)."""
    def follow(job: Job) -> None:
        if job.status is JobStatus.QUEUED:
            loop.wake()
        elif job.status.terminal:
            loop.drop(job.id)  # its remaining model calls go
    return follow


async def local_gauges(services: Services) -> None:
    assert services.loop is not None
    await set_queue_gauges(services.jobs, services.metrics)
    services.metrics.jobs_running.set(services.loop.holding(kind=JOB))


async def worker_gauges(services: Services) -> None:
    assert services.loop is not None and isinstance(services.queue, RedisWorkQueue)
    services.metrics.jobs_running.set(services.loop.holding(kind=JOB))
    await publish_gauges(services.queue, services.jobs, services.metrics)
