"""`sami-gateway serve` in scale-out mode: a stateless front over Redis and S3-compatible storage.

It authenticates, charges quotas shared by every front, checks requests with the namespaces'
own parsers, stores inputs and enqueues work; invokes are answered when a worker replies, jobs
are read from Redis, and their results are fetched straight from storage by presigned URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..config import Config
from ..config.cluster import cluster_settings
from ..errors import Code, GatewayError, error
from ..jobs.service import JobService
from ..jobs.storage_quota import AppkeyStorageLimits
from ..jobs.webhooks import WebhookSecrets
from ..metrics import Metrics
from ..namespace import Namespace
from ..work.queue import holder_name
from . import keys
from .cluster_service import build_cluster_service, publish_gauges
from .redis_client import redis_client, redis_unavailable
from .redis_quota import RedisQuotas
from .remote_invoke import InvokeDispatcher, remote
from .subscriber import Subscriber
from .workqueue import RedisWorkQueue

GAUGE_SECONDS = 2.0  # queue gauges and the count of live workers are refreshed this often


class ClusterFront:
    """A front's shared resources: the Redis client, the invoke dispatcher, the job service."""

    def __init__(self, config: Config, namespaces: dict[str, Namespace[Any]], metrics: Metrics) -> None:
        settings = cluster_settings(config)
        if not settings.storage_url:
            raise ValueError("SAMI_QUEUE_URL needs SAMI_STORAGE_URL too (inputs and results go to S3 storage)")
        self.client = redis_client(settings.queue_url)
        self.name = "front-" + holder_name()
        self.queue = RedisWorkQueue(self.client, self.name, settings.work_lease)
        self.dispatcher = InvokeDispatcher(self.client, self.name, config.request_timeout)
        self.namespaces: dict[str, Namespace[Any]] = {
            name: remote(namespace, self.dispatcher) for name, namespace in namespaces.items()}
        self.quotas = RedisQuotas(self.client, config.request_timeout + 60)
        self.secrets, self.storage_limits = WebhookSecrets(config), AppkeyStorageLimits(config)
        self.service: JobService = build_cluster_service(config, self.client, namespaces, settings, self.secrets,
                                                         self.storage_limits)
        self.metrics = metrics
        self.workers_alive: int | None = None  # None until first counted
        self.dispatcher.admit = self.check_workers
        self._jobs = Subscriber(self.client, [keys.JOB_CHANGED], self._job_changed, self._missed_changes)

    def _job_changed(self, channel: str, data: bytes) -> None:
        self.service.events.publish(data.decode())

    async def _missed_changes(self) -> None:
        self.service.events.wake_all()

    def check_workers(self) -> None:
        """Refuse an invoke at once when no worker is alive to run it."""
        if self.workers_alive == 0:
            raise error(Code.BACKEND_UNAVAILABLE, "no worker is alive", {"Retry-After": "5"})

    async def _gauges(self) -> None:
        while True:
            try:
                self.workers_alive = await publish_gauges(self.queue, self.service, self.metrics)
            except GatewayError:
                pass
            await asyncio.sleep(GAUGE_SECONDS)

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        await self.service.blobs.open()
        await self.service.store.open()
        self.dispatcher.start()
        self._jobs.start()
        gauges = asyncio.create_task(self._gauges(), name="cluster-gauges")
        try:
            yield
        finally:
            gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges
            await self._jobs.stop()
            await self.dispatcher.stop()
            await self.quotas.close()
            await self.service.store.close()
            await self.client.aclose()

    async def readiness(self) -> dict[str, Any]:
        """Redis and storage reachable, and how many workers are alive."""
        checks: dict[str, Any] = {}
        try:
            with redis_unavailable():
                async with asyncio.timeout(3):
                    await self.client.ping()
            checks["redis"] = True
            checks["workers_alive"] = self.workers_alive = await self.queue.workers_alive()
        except (GatewayError, TimeoutError):
            checks["redis"], checks["workers_alive"] = False, 0
        try:
            async with asyncio.timeout(3):
                await self.service.blobs.ping()  # type: ignore[attr-defined]
            checks["storage"] = True
        except (GatewayError, TimeoutError):
            checks["storage"] = False
        return checks
