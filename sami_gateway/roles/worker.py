"""`sami-gateway worker`: the worker role, built by `roles/services.py`: the one work loop
(`work/loop.py`) over the shared Redis queue, with the models it loaded.

A worker holds at most `SAMI_MAX_JOBS` invokes and `SAMI_JOB_WORKERS` jobs at once; they share
one scheduler, so an invoke's model calls go before a job's, as in the single process. Besides
the loop (taking, leases, reclaiming, handing back), it drops what is cancelled (an invoke whose
client left, a job cancelled or deleted) within a second, has its namespace forget what it keeps
of a deleted or expired job (its stem cache entries), delivers webhooks, expires old jobs, sweeps
the storage of objects no job refers to (one worker at a time), and serves `/healthz` and
`/metrics` on SAMI_WORKER_PORT. SIGTERM: it stops taking work and finishes what it holds within
SAMI_SHUTDOWN_GRACE; what is left then is handed back for another worker to start at once.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..cluster import keys
from ..config import Config
from ..config.cluster import cluster_settings
from ..runtime.namespace import Namespace
from .services import Role, build_services, reread

log = logging.getLogger(__name__)
STOP_REPORT_SECONDS = 20.0  # past the grace, a stop still running dumps every stack (faulthandler)


class Worker:
    """One worker process: its services, with names for the parts tests and `/healthz` look at."""

    def __init__(self, config: Config, namespaces: dict[str, Namespace[Any]] | None = None) -> None:
        self.config = config
        self.services = build_services(config, Role.WORKER, namespaces)
        assert self.services.loop is not None and self.services.signals is not None
        self.namespaces, self.metrics, self.queue = self.services.namespaces, self.services.metrics, self.services.queue
        self.client, self.service, self.loop = self.services.client, self.services.jobs, self.services.loop
        self.sweeper, self.orphans = self.services.sweeper, self.services.orphans
        self.subscriber = self.services.signals.subscriber

    async def start(self) -> None:
        await self.services.start()
        log.info("worker %s taking work (%s)", self.queue.name, self.loop.capacity)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, finish what is held within the configured grace (or `grace`), hand back
        the rest. A stop that has not ended well after its grace writes every thread's stack to the
        log: a worker that will not exit says where it waits."""
        grace = self.config.shutdown_grace if grace is None else grace
        faulthandler.dump_traceback_later(grace + STOP_REPORT_SECONDS, exit=False)
        try:
            await self.services.stop(grace)
        finally:
            faulthandler.cancel_dump_traceback_later()


def worker_app(worker: Worker) -> web.Application:
    """`/healthz` and `/metrics` of a worker."""
    async def healthz(request: web.Request) -> web.Response:
        body = {"status": "ok", "worker": worker.queue.name, "taking": worker.loop.taking,
                "holding": {cls: worker.loop.holding(cls) for cls in keys.CLASSES},
                "redis": worker.subscriber.connected.is_set()}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", worker.metrics.handler)
    return app


def reload(worker: Worker, flags: Mapping[str, Any]) -> bool:
    """SIGHUP: read the configuration again and replace what a worker keeps of it (webhook secrets,
    storage limits); a bad one is logged and the running one kept."""
    config = reread(flags)
    if config is None:
        return False
    worker.services.reload(config)
    log.info("configuration reloaded: %d appkeys", len(config.appkeys))
    return True


async def serve_worker(config: Config, flags: Mapping[str, Any] | None = None) -> None:
    """Run a worker until SIGTERM or SIGINT; SIGHUP reloads the configuration `flags` name."""
    settings = cluster_settings(config)
    if not settings.enabled or not settings.storage_url:
        raise SystemExit("sami-gateway worker: set SAMI_QUEUE_URL and SAMI_STORAGE_URL")
    worker = Worker(config)
    runner = web.AppRunner(worker_app(worker), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.worker_host, settings.worker_port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, worker, dict(flags or {}))
    try:
        await worker.start()
        log.info("worker %s: /healthz and /metrics on http://%s:%d", worker.queue.name, settings.worker_host,
                 settings.worker_port)
        await stop.wait()
    finally:
        await worker.stop(config.shutdown_grace)
        # From here the process only ends (the loop's executor joined, then the interpreter's
        # threads): an exit that hangs says where, as a stop does.
        faulthandler.dump_traceback_later(STOP_REPORT_SECONDS, exit=False)
        await runner.cleanup()
