"""`sami-gateway worker`: takes work from the shared queue and runs it with the models it loaded.

A worker holds at most `SAMI_MAX_JOBS` invokes and `SAMI_JOB_WORKERS` jobs at once; they share
one scheduler, so an invoke's model calls go before a job's, as in the single process. It renews
the lease of what it holds, reclaims what other workers stopped renewing, drops what is
cancelled (an invoke whose client left, a job cancelled or deleted) within a second, has its
namespace forget what it keeps of a deleted or expired job (its stem cache entries), delivers
webhooks, expires old jobs, sweeps the storage of objects no job refers to (one worker at a time),
and serves `/healthz` and `/metrics` on SAMI_WORKER_PORT. SIGTERM:
it stops taking work and finishes what it holds within SAMI_SHUTDOWN_GRACE; what is left then is
taken over by another worker after its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import math
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web

from ..config import Config, ConfigError, load_config
from ..config.cluster import cluster_settings
from ..errors import Code, GatewayError, error, store_trouble
from ..fetch import Fetcher, FetchPolicy
from ..jobs.model import Job, JobStatus
from ..jobs.runner import JobRunner
from ..jobs.setup import count_transition
from ..jobs.storage_quota import AppkeyStorageLimits
from ..jobs.sweeper import Sweeper
from ..jobs.webhooks import WebhookSecrets, WebhookSender
from ..metrics import Metrics
from ..namespace import Call, Namespace, load_namespaces, release
from ..scheduler import JobTimeout, Limits, Scheduler
from . import keys
from .cluster_service import build_cluster_service, publish_gauges
from .orphans import OrphanSweeper, orphan_grace
from .redis_client import redis_client, redis_unavailable
from .remote_invoke import KEEP_SECONDS, InvokeRequest, encode_error, encode_result
from .subscriber import Subscriber
from .workqueue import Work, WorkQueue

log = logging.getLogger(__name__)
GAUGE_SECONDS = 5.0
BACKEND_RETRY_SECONDS = 2.0  # a job whose storage or Redis went away is run again after this
STOP_REPORT_SECONDS = 20.0  # past the grace, a stop still running dumps every stack (faulthandler)


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """One worker process's loops around the queue."""

    def __init__(self, config: Config, namespaces: dict[str, Namespace[Any]] | None = None) -> None:
        self.config = config
        self.settings = cluster_settings(config)
        self.namespaces = namespaces if namespaces is not None else load_namespaces(config)
        self.metrics = Metrics(self.namespaces)
        self.scheduler = Scheduler(Limits(config.max_jobs, config.max_queued_seconds),
                                   on_job_done=self.metrics.job_done, nice=config.worker_nice)
        self.metrics.watch(self.scheduler)
        self.client = redis_client(self.settings.queue_url)
        self.queue = WorkQueue(self.client, worker_name(), self.settings.work_lease)
        self.fetcher = Fetcher(FetchPolicy.from_entries(config.fetch_allow), config.fetch_connect_timeout,
                               config.fetch_timeout)
        self.secrets, self.storage_limits = WebhookSecrets(config), AppkeyStorageLimits(config)
        self.service = build_cluster_service(config, self.client, self.namespaces, self.settings, self.secrets,
                                             self.storage_limits)
        self.runner = JobRunner(self.service, self.fetcher, 0,
                                lambda report: self.metrics.record_run(self.service.namespace_name, report))
        self.runner.requeue_when_stopped = False
        self.sender = WebhookSender(self.service.store, self.fetcher, self.service.webhook_secret,
                                    self.service.settings.webhook_timeout, self.service.settings.webhook_retry_delays,
                                    lambda outcome: self.metrics.webhook_attempts.labels(outcome).inc())
        self.service.on_change.append(self.sender.on_change)
        self.service.on_change.append(lambda job: count_transition(self.metrics, job))
        self.service.on_event_dropped = lambda job: self.metrics.webhook_events_dropped.inc()
        self.sweeper = Sweeper(self.service)
        self.orphans = OrphanSweeper(self.client, self.sweeper, self.queue.name, orphan_grace(config))
        self.subscriber = Subscriber(self.client, [keys.WAKE, keys.CANCEL, keys.JOB_CHANGED, keys.JOB_DELETED],
                                     self._message, self._recheck)
        self.capacity = {"interactive": config.max_jobs, "batch": self.service.settings.job_workers}
        self.held: dict[str, tuple[Work, asyncio.Task[None]]] = {}  # stream entry -> (work, its task)
        self._dropped: set[str] = set()  # entries cancelled on purpose (acknowledged, not retried)
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._taking = True
        self._outage_at = -math.inf  # when this worker last failed to reach Redis (monotonic)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.scheduler.start()
        for namespace in self.namespaces.values():
            await namespace.start(self.scheduler)
            for model, seconds in namespace.load_seconds().items():
                self.metrics.model_load.labels(model).set(seconds)
        await self.fetcher.open()
        await self.service.blobs.open()
        await self.service.store.open()
        self.subscriber.start()
        await self.sweeper.start(orphans=False)  # fronts write inputs before their jobs exist: see `self.orphans`
        self.orphans.start()
        self.sender.start()
        self._tasks = [asyncio.create_task(self._forever(loop, every), name=loop.__name__) for loop, every in (
            (self._take_round, 0.0), (self._lease_round, self.queue.lease / 4),
            (self._reclaim_round, self.queue.lease / 2), (self._gauge_round, GAUGE_SECONDS))]
        log.info("worker %s taking work (%s)", self.queue.name, self.capacity)

    async def stop(self, grace: float) -> None:
        # A stop that has not ended well after its grace writes every thread's stack to the log: a
        # worker that will not exit says where it waits (it once outlived 30 s in a test, unexplained).
        faulthandler.dump_traceback_later(grace + STOP_REPORT_SECONDS, exit=False)
        try:
            await self._stop(grace)
        finally:
            faulthandler.cancel_dump_traceback_later()

    async def _stop(self, grace: float) -> None:
        self._taking = False
        self._wake.set()
        running = [task for _, task in self.held.values()]
        if running:
            log.info("worker %s finishing %d held pieces of work (up to %g s)", self.queue.name, len(running), grace)
            await asyncio.wait(running, timeout=grace)
        for task in self._tasks:
            task.cancel()
        unfinished = list(self.held.values())
        for _, task in unfinished:
            task.cancel()
        for task in [*self._tasks, *(task for _, task in unfinished)]:
            with contextlib.suppress(BaseException):
                await task
        for work, _ in unfinished:  # another worker starts them now, not after the lease
            with contextlib.suppress(GatewayError):
                if await self.queue.release(work):
                    log.info("%s %s handed back to the queue", work.kind, work.id)
        with contextlib.suppress(GatewayError):
            await self.queue.leave()
        await self.sender.stop()
        await self.sweeper.stop()
        await self.orphans.stop()
        await self.subscriber.stop()
        for namespace in reversed(list(self.namespaces.values())):
            await namespace.stop()
        await self.fetcher.close()
        await self.service.store.close()
        self.scheduler.close()
        await self.client.aclose()

    async def _forever(self, round_: Callable[[], Awaitable[None]], every: float) -> None:
        """Repeat one round of a loop: Redis away is waited out, anything else logged; never ends."""
        while True:
            try:
                await round_()
            except GatewayError:
                self._outage_at = time.monotonic()
                await asyncio.sleep(1.0)
            except Exception:  # noqa: BLE001 - a bug in one round must not stop the worker's loop
                log.exception("worker loop %s failed; going on", round_.__name__)
                await asyncio.sleep(1.0)
            await asyncio.sleep(every * random.uniform(0.8, 1.2))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- taking ------------------------------------------------------------------------------

    def _free(self, cls: str) -> bool:
        return sum(1 for work, _ in self.held.values() if work.cls == cls) < self.capacity[cls]

    async def _take_round(self) -> None:
        if not self._taking:
            await asyncio.sleep(3600)
            return
        classes = [cls for cls in keys.CLASSES if self._free(cls)]
        work = await self.queue.take(classes) if classes else None
        if work is None:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            return
        self.metrics.work_wait.labels(work.cls).observe(max(0.0, time.time() - work.enqueued))
        self.held[work.entry] = (work, asyncio.create_task(self._handle(work), name=f"work-{work.id}"))

    def _entries(self, work_id: str) -> list[str]:
        return [entry for entry, (work, _) in self.held.items() if work.id == work_id]

    def _message(self, channel: str, data: bytes) -> None:
        text = data.decode()
        if channel == keys.WAKE:
            self._wake.set()
        elif channel == keys.CANCEL:
            for entry in self._entries(text):
                self._drop(entry)
        elif channel == keys.JOB_CHANGED and self._entries(text):
            self._spawn(self._check_job(text))
        elif channel == keys.JOB_DELETED:
            job_id, _, appkey = text.partition(" ")
            self._spawn(self._forget_job(appkey, job_id))

    async def _recheck(self) -> None:
        """After a lost subscription: what was cancelled meanwhile is dropped now."""
        for entry, (work, _) in list(self.held.items()):
            if work.kind == keys.JOB:
                await self._check_job(work.id)
            else:
                with redis_unavailable():
                    if not await self.client.exists(keys.invoke_request(work.id)) and entry in self.held:
                        self._drop(entry)

    async def _check_job(self, job_id: str) -> None:
        with contextlib.suppress(GatewayError):
            job = await self.service.store.get_job(job_id)
            if job is None or job.status.terminal:
                for entry in self._entries(job_id):
                    self._drop(entry)

    async def _forget_job(self, appkey: str, job_id: str) -> None:
        """A job deleted anywhere (by a front, or expired by any sweeper): what this worker keeps of it goes."""
        try:
            await self.service.forget_in_namespace(appkey, job_id)
        except Exception:  # noqa: BLE001 - the entries stay until evicted; the worker goes on
            log.exception("forgetting job %s failed", job_id)

    def _drop(self, entry: str) -> None:
        self._dropped.add(entry)
        self.held[entry][1].cancel()

    async def _handle(self, work: Work) -> None:
        finished = False
        try:
            if work.kind == keys.INVOKE:
                await self._invoke(work)
            else:
                await self._job(work)
            finished = True
        except asyncio.CancelledError:
            finished = work.entry in self._dropped  # cancelled by its client: done; by a stop: handed back
            if not finished:
                raise
        except Exception:  # noqa: BLE001 - the work stays leased and is retried elsewhere
            log.exception("work %s (%s) failed in the worker", work.id, work.kind)
        finally:
            self.held.pop(work.entry, None)
            self._dropped.discard(work.entry)
            self._wake.set()
            if finished:
                with contextlib.suppress(GatewayError):
                    await self.queue.done(work)

    # -- running -----------------------------------------------------------------------------

    async def _invoke(self, work: Work) -> None:
        with redis_unavailable():
            raw, data = await self.client.mget(keys.invoke_request(work.id), keys.invoke_input(work.id))
        if raw is None or data is None:
            return  # its front gave up on it (or it was answered before a takeover)
        request = InvokeRequest.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
        remaining = request.deadline - time.time()
        if remaining <= 0:
            return
        namespace = self.namespaces.get(request.namespace)
        try:
            if namespace is None:
                raise error(Code.DENIED_NAMESPACE, f"this worker does not serve {request.namespace}")
            params = namespace.parse(request.payload)
            try:
                async with asyncio.timeout(remaining):
                    result = await namespace.run(Call(request.task_id, request.appkey, params, data))  # type: ignore[arg-type]
            except (TimeoutError, JobTimeout) as exc:
                raise error(Code.TIMEOUT, f"no answer within {self.config.request_timeout:g} s") from exc
            finally:
                release(data)  # type: ignore[arg-type]
            self.metrics.record_run(request.namespace, result.report)
            answer = encode_result(result)
        except GatewayError as exc:
            answer = encode_error(exc)
        except Exception:  # noqa: BLE001 - logged with the task id, answered as an internal error
            log.exception("invoke %s failed unexpectedly", request.task_id)
            answer = encode_error(error(Code.INTERNAL_ERROR))
        await self._answer(work.id, request.reply_to, answer)

    async def _answer(self, work_id: str, reply_to: str, answer: dict[str, bytes]) -> None:
        key = keys.invoke_output(work_id)
        with redis_unavailable():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=answer)  # type: ignore[arg-type]
                pipe.pexpire(key, int(KEEP_SECONDS * 1000))
                pipe.delete(keys.invoke_request(work_id), keys.invoke_input(work_id))
                pipe.publish(reply_to, work_id)
                await pipe.execute()

    async def _job(self, work: Work) -> None:
        started = await self._claim(work)
        while started is not None:
            try:
                await self.runner.run(started)
                return
            except GatewayError as exc:
                if not store_trouble(exc):
                    raise
                log.warning("job %s: %s; running it again in %g s", started.id, exc.detail, BACKEND_RETRY_SECONDS)
            await asyncio.sleep(BACKEND_RETRY_SECONDS)  # holding the lease: the job stays this worker's
            with contextlib.suppress(GatewayError):
                current = await self.service.store.get_job(started.id)
                if current is None or current.status.terminal:
                    return

    async def _claim(self, work: Work) -> Job | None:
        """Mark the job started; None when it ended meanwhile. Redis away while claiming is waited out
        holding the lease: the job has not run, so the blip must not cost it one of its attempts."""
        while True:
            try:
                job = await self.service.store.get_job(work.id)
                if job is None or job.status.terminal:
                    return None
                return await self.service.started(job, takeover=work.attempt > 0 or job.status is JobStatus.PROCESSING)
            except GatewayError as exc:
                if exc.code is not Code.BACKEND_UNAVAILABLE:
                    raise
                log.warning("job %s: %s while claiming it; trying again in %g s", work.id, exc.detail,
                            BACKEND_RETRY_SECONDS)
            await asyncio.sleep(BACKEND_RETRY_SECONDS)

    # -- leases, takeovers, gauges -----------------------------------------------------------

    async def _lease_round(self) -> None:
        await self.queue.heartbeat()
        for work, task in list(self.held.values()):
            if not await self.queue.renew(work):
                log.warning("%s %s was taken over by another worker: dropping this run", work.kind, work.id)
                task.cancel()

    async def _reclaim_round(self) -> None:
        if time.monotonic() - self._outage_at < self.queue.lease * 1.5:
            return  # just back from a Redis outage: the owners renew first, no mass takeover
        await self.reclaim_once()

    async def reclaim_once(self) -> None:
        """Queue again the work whose lease lapsed; fail what has used its last attempt, each on its own:
        one that cannot be failed is logged and left for the next round, the others are still failed."""
        requeued, exhausted = await self.queue.reclaim(self.service.settings.max_job_attempts)
        for work in requeued:
            self.metrics.lease_takeovers.labels(work.cls).inc()
            log.warning("%s %s: its worker's lease lapsed; queued again (attempt %d)", work.kind, work.id,
                        work.attempt + 1)
        for work in exhausted:
            try:
                await self._exhausted(work)
            except Exception as exc:  # noqa: BLE001 - one item's fault: the round goes on with the others
                if isinstance(exc, GatewayError) and exc.code is Code.BACKEND_UNAVAILABLE:
                    raise  # Redis or storage away: every item would meet it; the next round tries again
                log.exception("%s %s could not be failed after its last attempt; left for the next round",
                              work.kind, work.id)
                continue
            await self.queue.done(work)  # only now: until it is failed, another round finds it again
            self.metrics.work_exhausted.labels(work.cls).inc()

    async def _exhausted(self, work: Work) -> None:
        failure = error(Code.INTERNAL_ERROR, f"its worker stopped answering; {work.attempt} runs were cut short")
        if work.kind == keys.JOB:
            job = await self.service.store.get_job(work.id)
            if job is not None and not job.status.terminal:
                await self.service.finish(job, JobStatus.FAILED, failure=failure, reason="attempts exhausted")
            return
        with redis_unavailable():
            raw = await self.client.get(keys.invoke_request(work.id))
        if raw is not None:
            request = InvokeRequest.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
            await self._answer(work.id, request.reply_to, encode_error(failure))

    async def _gauge_round(self) -> None:
        self.metrics.jobs_running.set(sum(1 for work, _ in self.held.values() if work.kind == keys.JOB))
        await publish_gauges(self.queue, self.service, self.metrics)


def worker_app(worker: Worker) -> web.Application:
    """`/healthz` and `/metrics` of a worker."""
    async def healthz(request: web.Request) -> web.Response:
        body = {"status": "ok", "worker": worker.queue.name, "taking": worker._taking,
                "holding": {cls: sum(1 for work, _ in worker.held.values() if work.cls == cls) for cls in keys.CLASSES},
                "redis": worker.subscriber.connected.is_set()}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", worker.metrics.handler)
    return app


def reload(worker: Worker, flags: Mapping[str, Any]) -> bool:
    """SIGHUP: read the configuration again and replace what a worker keeps of it (webhook secrets,
    storage limits); a bad one is logged and the running one kept."""
    try:
        config = load_config(flags)
    except ConfigError as exc:
        log.error("configuration reload refused, keeping the running one: %s", exc)
        return False
    worker.secrets.replace(config)
    worker.storage_limits.replace(config)
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
