"""The application factory: routes, middleware and the lifetime of shared resources."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .auth import Authenticator, TokenService
from .cluster.front import ClusterFront
from .config import Config
from .config.cluster import cluster_settings
from .docs import add_docs_routes
from .fetch import Fetcher, FetchPolicy
from .gettoken import GetTokenService, add_gettoken_routes
from .invoke import invoke
from .jobs.http import JOBS
from .jobs.setup import add_cluster_jobs, add_jobs
from .metrics import Metrics
from .middleware import envelope_errors, invoke_metrics
from .namespace import Namespace, load_namespaces
from .quota import QuotaTracker, StreamSlots
from .scheduler import Limits, Scheduler
from .state import (
    AUTH,
    BODY_LIMIT,
    CONFIG,
    FETCHER,
    FRONT,
    METRICS,
    NAMESPACES,
    QUOTAS,
    READY,
    RELOADERS,
    SCHEDULER,
    STREAMS,
    Readiness,
)
from .ui.routes import add_ui_routes

PAYLOAD_ALLOWANCE_BYTES = 1024 * 1024  # room for the JSON around `data` and the payload string
LOW_DISK_BYTES = 1024 * 1024  # less free room than this in the data folder and the next job's files do not fit


def body_limit(max_input_bytes: int) -> int:
    """Largest invoke body: the base64 of the largest input (4/3 of it) plus the envelope around it."""
    return 4 * -(-max_input_bytes // 3) + PAYLOAD_ALLOWANCE_BYTES


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Models loaded (a front: Redis, storage and a worker reachable) and room to admit a request; 503 otherwise."""
    snapshot = request.app[SCHEDULER].snapshot()
    loaded, admitting = request.app[READY].models_loaded, request.app[READY].admitting
    ready = loaded and admitting and not snapshot.saturated
    body: dict[str, Any] = {"status": "", "models_loaded": loaded, "admitting": admitting,
                            "requests": snapshot.jobs, "queued_audio_seconds": round(snapshot.queued_cost, 3)}
    front = request.app.get(FRONT)
    if front is not None:
        checks = await front.readiness()
        body.update(checks)
        ready = ready and checks["redis"] and checks["storage"] and checks["workers_alive"] > 0
    elif (jobs := request.app.get(JOBS)) is not None:  # the single process keeps files on its own disk
        free = shutil.disk_usage(jobs.settings.data_dir).free
        body.update(disk=free >= LOW_DISK_BYTES, disk_free_bytes=free)
        ready = ready and free >= LOW_DISK_BYTES
    body["status"] = "ready" if ready else "unavailable"
    return web.json_response(body, status=200 if ready else 503)


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    scheduler = app[SCHEDULER]
    scheduler.start()
    app[READY].admitting = True
    yield
    app[READY].admitting = False
    await scheduler.drain(config.shutdown_grace)
    scheduler.close()


async def _stop_admitting(app: web.Application) -> None:
    """SIGTERM: new requests get 503 while the admitted ones finish."""
    app[READY].admitting = False
    app[SCHEDULER].stop_admitting()


async def _namespaces_ctx(app: web.Application) -> AsyncIterator[None]:
    started: list[Namespace[Any]] = []
    try:
        for namespace in app[NAMESPACES].values():
            await namespace.start(app[SCHEDULER])
            started.append(namespace)
            for model, seconds in namespace.load_seconds().items():
                app[METRICS].model_load.labels(model).set(seconds)
        app[READY].models_loaded = True
        yield
    finally:
        for namespace in reversed(started):
            await namespace.stop()


async def _fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    fetcher = app[FETCHER]
    await fetcher.open()
    yield
    await fetcher.close()


def create_app(config: Config, namespaces: dict[str, Namespace[Any]] | None = None) -> web.Application:
    """Build the gateway; `namespaces` replaces the configured plugins (tests)."""
    if namespaces is None:
        namespaces = load_namespaces(config)
    metrics = Metrics(namespaces)
    front = ClusterFront(config, namespaces, metrics) if cluster_settings(config).enabled else None
    if front is not None:
        namespaces = front.namespaces  # parsed here, run by workers
    limit = body_limit(config.max_input_bytes)
    app = web.Application(middlewares=[invoke_metrics, envelope_errors], client_max_size=limit)
    app[CONFIG] = config
    app[BODY_LIMIT] = limit
    app[NAMESPACES] = namespaces
    app[QUOTAS] = QuotaTracker() if front is None else front.quotas
    app[STREAMS] = StreamSlots()  # this process's, a front's too
    app[AUTH] = Authenticator(config.appkeys, TokenService.from_config(config), namespaces, config.default_quota)
    app[RELOADERS] = []
    app[FETCHER] = Fetcher(FetchPolicy.from_entries(config.fetch_allow),
                           config.fetch_connect_timeout, config.fetch_timeout)
    app[METRICS] = metrics
    app[SCHEDULER] = Scheduler(Limits(config.max_jobs, config.max_queued_seconds), on_job_done=metrics.job_done,
                               nice=config.worker_nice)
    metrics.watch(app[SCHEDULER])
    app[READY] = Readiness()
    add_gettoken_routes(app, GetTokenService(config.access_keys, TokenService.from_config(config),
                                             config.appkeys))
    app.cleanup_ctx.extend([_fetcher_ctx, _scheduler_ctx, _namespaces_ctx])
    if front is None:
        add_jobs(app)
    else:
        app[FRONT] = front
        add_cluster_jobs(app, front)
    app.on_shutdown.append(_stop_admitting)
    app.router.add_post("/api/v1/invoke", invoke)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.handler)
    add_docs_routes(app)
    add_ui_routes(app)
    return app
