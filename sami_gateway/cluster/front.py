"""`sami-gateway serve` in scale-out mode: a stateless front over Redis and S3-compatible storage.

It authenticates, charges quotas shared by every front, checks requests with the namespaces'
own parsers, stores inputs and enqueues work; invokes are answered when a worker replies, jobs
are read from Redis, and their results are fetched straight from storage by presigned URLs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from ..config import Config
from ..errors import Code, GatewayError, error
from ..jobs.service import JobService
from ..runtime.metrics import Metrics
from ..runtime.namespace import Namespace
from ..runtime.periodic import Periodic
from . import keys
from .gauges import publish_gauges
from .redis_client import redis_unavailable
from .redis_quota import RedisQuotas
from .remote_invoke import InvokeDispatcher, remote
from .subscriber import Subscriber
from .workqueue import RedisWorkQueue

log = logging.getLogger(__name__)
GAUGE_SECONDS = 2.0  # queue gauges and the count of live workers are refreshed this often


def _quiet(exc: Exception) -> float:
    """Redis away: the gauges keep their last values until it is back; anything else is a bug, logged."""
    if not isinstance(exc, GatewayError):
        log.error("the front's gauges failed", exc_info=exc)
    return 0.0


class ClusterFront:
    """What a front adds to the shared parts (`roles/services.py`): the invoke dispatcher, quotas
    shared by every front, job changes heard from Redis, and the count of live workers."""

    def __init__(self, config: Config, client: aioredis.Redis, queue: RedisWorkQueue,
                 namespaces: dict[str, Namespace[Any]], metrics: Metrics, service: JobService) -> None:
        self.client = client
        self.queue = queue
        self.dispatcher = InvokeDispatcher(client, queue.name, config.request_timeout)
        self.namespaces: dict[str, Namespace[Any]] = {
            name: remote(namespace, self.dispatcher) for name, namespace in namespaces.items()}
        self.quotas = RedisQuotas(client, config.request_timeout + 60)
        self.service = service
        self.metrics = metrics
        self.workers_alive: int | None = None  # None until first counted
        self.dispatcher.admit = self.check_workers
        self._jobs = Subscriber(client, [keys.JOB_CHANGED], self._job_changed, self._missed_changes)
        self._gauges = Periodic("cluster-gauges", self._gauge_round, GAUGE_SECONDS, failed=_quiet)

    def _job_changed(self, channel: str, data: bytes) -> None:
        self.service.events.publish(data.decode())

    async def _missed_changes(self) -> None:
        self.service.events.wake_all()

    def check_workers(self) -> None:
        """Refuse an invoke at once when no worker is alive to run it."""
        if self.workers_alive == 0:
            raise error(Code.BACKEND_UNAVAILABLE, "no worker is alive", {"Retry-After": "5"})

    async def _gauge_round(self) -> None:
        self.workers_alive = await publish_gauges(self.queue, self.service, self.metrics)

    def start(self) -> None:
        self.dispatcher.start()
        self._jobs.start()
        self._gauges.start()

    async def stop(self) -> None:
        await self._gauges.stop()
        await self._jobs.stop()
        await self.dispatcher.stop()
        await self.quotas.close()

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
