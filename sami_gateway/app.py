"""The application factory: routes, middleware and the lifetime of shared resources."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .auth.authenticator import Authenticator, TokenService
from .auth.quota import StreamSlots
from .config import Config
from .gettoken import GetTokenService, add_gettoken_routes
from .invoke.handler import invoke
from .jobs.api.routes import add_job_routes
from .openapi.page import add_docs_routes
from .roles.services import Role, build_services
from .runtime.namespace import Namespace
from .ui.routes import add_ui_routes
from .web.middleware import envelope_errors, invoke_metrics
from .web.state import (
    AUTH,
    BODY_LIMIT,
    CONFIG,
    JOBS,
    METRICS,
    NAMESPACES,
    OUTBOUND,
    QUOTAS,
    READY,
    SCHEDULER,
    SERVICES,
    STREAMS,
)

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
                            "requests": snapshot.tasks, "queued_audio_seconds": round(snapshot.queued_cost, 3),
                            "held_bytes": snapshot.held_bytes}
    front = request.app[SERVICES].front
    if front is not None:
        checks = await front.readiness()
        body.update(checks)
        ready = ready and checks["redis"] and checks["storage"] and checks["workers_alive"] > 0
    else:  # the single process keeps files on its own disk
        free = shutil.disk_usage(request.app[JOBS].settings.data_dir).free
        body.update(disk=free >= LOW_DISK_BYTES, disk_free_bytes=free)
        ready = ready and free >= LOW_DISK_BYTES
    body["status"] = "ready" if ready else "unavailable"
    return web.json_response(body, status=200 if ready else 503)


async def _stop_admitting(app: web.Application) -> None:
    """SIGTERM: new requests get 503 while the admitted ones finish."""
    app[READY].admitting = False
    app[SCHEDULER].stop_admitting()


def create_app(config: Config, namespaces: dict[str, Namespace[Any]] | None = None) -> web.Application:
    """Build the gateway over the services of its role (`roles/services.py`); `namespaces` replaces
    the configured plugins (tests)."""
    services = build_services(config, Role.serving(config), namespaces)
    limit = body_limit(config.max_input_bytes)
    app = web.Application(middlewares=[invoke_metrics, envelope_errors], client_max_size=limit)
    app[CONFIG] = config
    app[SERVICES] = services
    app[BODY_LIMIT] = limit
    app[NAMESPACES] = services.namespaces
    app[QUOTAS] = services.quotas
    app[STREAMS] = StreamSlots()  # this process's, a front's too
    app[AUTH] = Authenticator(config.appkeys, TokenService.from_config(config), services.namespaces,
                              config.default_quota)
    app[OUTBOUND] = services.outbound
    app[METRICS] = services.metrics
    app[SCHEDULER] = services.scheduler
    app[READY] = services.readiness
    app[JOBS] = services.jobs
    add_gettoken_routes(app, GetTokenService(config.access_keys, TokenService.from_config(config),
                                             config.appkeys))
    app.cleanup_ctx.append(_services_ctx)
    app.on_shutdown.append(_stop_admitting)
    app.router.add_post("/api/v1/invoke", invoke)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", services.metrics.handler)
    add_job_routes(app)
    add_docs_routes(app)
    add_ui_routes(app)
    return app


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    try:
        await services.start()
        yield
    finally:
        await services.stop()
