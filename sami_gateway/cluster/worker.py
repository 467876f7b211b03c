"""`sami-gateway worker`: runs the one work loop (`work/loop.py`) over the shared Redis queue, with
the models it loaded.

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
import contextlib
import faulthandler
import logging
import signal
import time
from collections.abc import Coroutine, Mapping
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from ..config import Config, ConfigError, load_config
from ..config.cluster import cluster_settings
from ..errors import Code, GatewayError, error
from ..fetch import Fetcher, FetchPolicy
from ..jobs.runner import JobRunner
from ..jobs.setup import count_transition
from ..jobs.storage_quota import AppkeyStorageLimits
from ..jobs.sweeper import Sweeper
from ..jobs.webhooks import WebhookSecrets, WebhookSender
from ..metrics import Metrics
from ..namespace import Call, Namespace, load_namespaces, release
from ..scheduler import JobTimeout, Limits, Scheduler
from ..work.loop import WorkLoop
from ..work.queue import BATCH, INTERACTIVE, Work, holder_name
from . import keys
from .cluster_service import build_cluster_service, publish_gauges
from .orphans import OrphanSweeper, orphan_grace
from .redis_client import redis_client, redis_unavailable
from .remote_invoke import KEEP_SECONDS, InvokeRequest, encode_error, encode_result
from .subscriber import Subscriber
from .workqueue import RedisWorkQueue

log = logging.getLogger(__name__)
GAUGE_SECONDS = 5.0
STOP_REPORT_SECONDS = 20.0  # past the grace, a stop still running dumps every stack (faulthandler)
ANSWER_RETRY_SECONDS = 2.0  # an invoke's answer that met Redis away is written again this often


class InvokeHandler:
    """The work loop's handler of invokes a front enqueued: run one, write its answer for the front."""

    def __init__(self, client: aioredis.Redis, namespaces: dict[str, Namespace[Any]], metrics: Metrics,
                 request_timeout: float) -> None:
        self._client = client
        self._namespaces = namespaces
        self._metrics = metrics
        self._request_timeout = request_timeout

    async def run(self, work: Work) -> None:
        with redis_unavailable():
            raw, data = await self._client.mget(keys.invoke_request(work.id), keys.invoke_input(work.id))
        if raw is None or data is None:
            return  # its front gave up on it (or it was answered before a takeover)
        request = InvokeRequest.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
        remaining = request.deadline - time.time()
        if remaining <= 0:
            return
        namespace = self._namespaces.get(request.namespace)
        try:
            if namespace is None:
                raise error(Code.DENIED_NAMESPACE, f"this worker does not serve {request.namespace}")
            params = namespace.parse(request.payload)
            try:
                async with asyncio.timeout(remaining):
                    result = await namespace.run(Call(request.task_id, request.appkey, params, data))  # type: ignore[arg-type]
            except (TimeoutError, JobTimeout) as exc:
                raise error(Code.TIMEOUT, f"no answer within {self._request_timeout:g} s") from exc
            finally:
                release(data)  # type: ignore[arg-type]
            self._metrics.record_run(request.namespace, result.report)
            answer = encode_result(result)
        except GatewayError as exc:
            answer = encode_error(exc)
        except Exception:  # noqa: BLE001 - logged with the task id, answered as an internal error
            log.exception("invoke %s failed unexpectedly", request.task_id)
            answer = encode_error(error(Code.INTERNAL_ERROR))
        await self._answer_when_back(work.id, request, answer)

    async def _answer_when_back(self, work_id: str, request: InvokeRequest, answer: dict[str, bytes]) -> None:
        """Write the answer; Redis away is waited out holding the work, until the request's deadline.
        Raising instead would leave the work to run again once its lease lapsed: the client would wait
        the lease, and the model would run twice."""
        while True:
            try:
                await self._answer(work_id, request.reply_to, answer)
                return
            except GatewayError as exc:
                if exc.code is not Code.BACKEND_UNAVAILABLE or time.time() + ANSWER_RETRY_SECONDS > request.deadline:
                    raise
                log.warning("invoke %s: %s while answering; trying again in %g s", request.task_id, exc.detail,
                            ANSWER_RETRY_SECONDS)
            await asyncio.sleep(ANSWER_RETRY_SECONDS)

    async def exhausted(self, work: Work, failure: GatewayError) -> None:
        with redis_unavailable():
            raw = await self._client.get(keys.invoke_request(work.id))
        if raw is not None:
            request = InvokeRequest.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
            await self._answer(work.id, request.reply_to, encode_error(failure))

    async def _answer(self, work_id: str, reply_to: str, answer: dict[str, bytes]) -> None:
        key = keys.invoke_output(work_id)
        with redis_unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=answer)  # type: ignore[arg-type]
                pipe.pexpire(key, int(KEEP_SECONDS * 1000))
                pipe.delete(keys.invoke_request(work_id), keys.invoke_input(work_id))
                pipe.publish(reply_to, work_id)
                await pipe.execute()


class Worker:
    """One worker process: the work loop over Redis, and what it hears of cancels and deletions."""

    def __init__(self, config: Config, namespaces: dict[str, Namespace[Any]] | None = None) -> None:
        self.config = config
        self.settings = cluster_settings(config)
        self.namespaces = namespaces if namespaces is not None else load_namespaces(config)
        self.metrics = Metrics(self.namespaces)
        self.scheduler = Scheduler(Limits(config.max_jobs, config.max_queued_seconds),
                                   on_job_done=self.metrics.job_done, nice=config.worker_nice)
        self.metrics.watch(self.scheduler)
        self.client = redis_client(self.settings.queue_url)
        self.queue = RedisWorkQueue(self.client, holder_name(), self.settings.work_lease)
        self.fetcher = Fetcher(FetchPolicy.from_entries(config.fetch_allow), config.fetch_connect_timeout,
                               config.fetch_timeout)
        self.secrets, self.storage_limits = WebhookSecrets(config), AppkeyStorageLimits(config)
        self.service = build_cluster_service(config, self.client, self.namespaces, self.settings, self.secrets,
                                             self.storage_limits)
        runner = JobRunner(self.service, self.fetcher,
                           lambda report: self.metrics.record_run(self.service.namespace_name, report))
        invokes = InvokeHandler(self.client, self.namespaces, self.metrics, config.request_timeout)
        self.loop = WorkLoop(self.queue, {keys.INVOKE: invokes, keys.JOB: runner},
                             {INTERACTIVE: config.max_jobs, BATCH: self.service.settings.job_workers},
                             self.service.settings.max_job_attempts, self.metrics)
        self.loop.add_round(self._gauge_round, GAUGE_SECONDS)
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
        self._background: set[asyncio.Task[None]] = set()

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
        self.loop.start()
        log.info("worker %s taking work (%s)", self.queue.name, self.loop.capacity)

    async def stop(self, grace: float) -> None:
        # A stop that has not ended well after its grace writes every thread's stack to the log: a
        # worker that will not exit says where it waits (it once outlived 30 s in a test, unexplained).
        faulthandler.dump_traceback_later(grace + STOP_REPORT_SECONDS, exit=False)
        try:
            await self._stop(grace)
        finally:
            faulthandler.cancel_dump_traceback_later()

    async def _stop(self, grace: float) -> None:
        await self.loop.stop(grace)
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

    async def _gauge_round(self) -> None:
        self.metrics.jobs_running.set(self.loop.holding(kind=keys.JOB))
        await publish_gauges(self.queue, self.service, self.metrics)


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
