"""What a worker hears through Redis: work enqueued (wake the loop), an invoke cancelled by its
front, a job cancelled or deleted (drop its run within a second), and a job deleted anywhere
(its namespace forgets what it keeps of it: stem cache entries). After a lost subscription it
looks again at what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis

from ..errors import GatewayError
from ..jobs.service import JobService
from ..work.loop import WorkLoop
from . import keys
from .redis_client import redis_unavailable
from .subscriber import Subscriber

log = logging.getLogger(__name__)


class WorkerSignals:
    """The worker's subscription, acting on its work loop and job service."""

    def __init__(self, client: aioredis.Redis, loop: WorkLoop, service: JobService) -> None:
        self.client = client
        self.loop = loop
        self.service = service
        self.subscriber = Subscriber(client, [keys.WAKE, keys.CANCEL, keys.JOB_CHANGED, keys.JOB_DELETED],
                                     self._message, self._recheck)
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.subscriber.start()

    async def stop(self) -> None:
        await self.subscriber.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- what it hears -----------------------------------------------------------------------

    def _holds(self, work_id: str) -> bool:
        return any(work.id == work_id for work, _ in self.loop.held.values())

    def _message(self, channel: str, data: bytes) -> None:
        text = data.decode()
        if channel == keys.WAKE:
            self.loop.wake()
        elif channel == keys.CANCEL:
            self.loop.drop(text)
        elif channel == keys.JOB_CHANGED and self._holds(text):
            self._spawn(self._check_job(text))
        elif channel == keys.JOB_DELETED:
            job_id, _, appkey = text.partition(" ")
            self._spawn(self._forget_job(appkey, job_id))

    async def _recheck(self) -> None:
        """After a lost subscription: what was cancelled meanwhile is dropped now."""
        for work, _ in list(self.loop.held.values()):
            if work.kind == keys.JOB:
                await self._check_job(work.id)
            else:
                with redis_unavailable():
                    if not await self.client.exists(keys.invoke_request(work.id)):
                        self.loop.drop(work.id)

    async def _check_job(self, job_id: str) -> None:
        with contextlib.suppress(GatewayError):
            job = await self.service.store.get_job(job_id)
            if job is None or job.status.terminal:
                self.loop.drop(job_id)

    async def _forget_job(self, appkey: str, job_id: str) -> None:
        """A job deleted anywhere (by a front, or expired by any sweeper): what this worker keeps of it goes."""
        try:
            await self.service.forget_in_namespace(appkey, job_id)
        except Exception:  # noqa: BLE001 - the entries stay until evicted; the worker goes on
            log.exception("forgetting job %s failed", job_id)
