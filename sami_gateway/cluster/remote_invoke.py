"""Invoke through the shared queue: the front holds the client's connection, a worker runs it.

The front checks everything it can without models (auth, quota, the payload through the
namespace's own `parse`), puts the request and its input in Redis with the work entry (one
script: either all three exist or none), and waits for the answer on its own reply channel.
The worker writes the answer (result bytes, payload and report, or the error) under the work's
key and publishes its id; the front reads it and answers the client with the same envelope the
single process gives. A front's deadline cancels the work on whichever worker holds it; a request
that Redis lost (restarted empty, a failover) is answered 503 within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from ..errors import Code, GatewayError, error
from ..runtime.namespace import Call, JobCall, JobOutput, Namespace, Result, RunReport
from ..runtime.periodic import Background
from ..runtime.scheduler import Scheduler
from . import keys
from .redis_client import RETRY_AFTER, redis_unavailable
from .subscriber import Subscriber

log = logging.getLogger(__name__)
KEEP_SECONDS = 60.0  # an answer waits this long for its front; a request this long past its deadline
# A waiting invoke whose request Redis no longer has (restarted empty, a failover that lost writes)
# is answered 503 within this, not at SAMI_REQUEST_TIMEOUT: one EXISTS per waiting invoke each time.
LOST_CHECK_SECONDS = 1.5

_SUBMIT = keys.ENQUEUE_LUA + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
enqueue('interactive', ARGV[4], 'invoke', ARGV[5], ARGV[6])
return 1
"""


@dataclass(frozen=True)
class RemoteParams:
    """A payload the front checked with the namespace's own parser (so bad ones are refused there),
    kept as sent: the worker parses it into the value it runs, the one parse whose result is used."""

    payload: Mapping[str, Any]


@dataclass(frozen=True)
class QueuedInvoke:
    """What a worker needs to run an invoke, as stored in Redis."""

    task_id: str
    appkey: str
    namespace: str
    payload: Mapping[str, Any]
    reply_to: str
    deadline: float  # unix seconds

    def encode(self) -> bytes:
        return orjson.dumps({"task_id": self.task_id, "appkey": self.appkey, "namespace": self.namespace,
                             "payload": self.payload, "reply_to": self.reply_to, "deadline": self.deadline})

    @classmethod
    def decode(cls, raw: bytes) -> QueuedInvoke:
        return cls(**orjson.loads(raw))


def encode_result(result: Result) -> dict[str, bytes]:
    report = result.report
    meta = {"payload": result.payload, "has_data": result.data is not None,
            "report": {"model": report.model, "input_seconds": report.input_seconds,
                       "stage_seconds": dict(report.stage_seconds), "cache_hit": report.cache_hit,
                       "cache_bytes": report.cache_bytes}}
    return {"meta": orjson.dumps(meta), "data": result.data or b""}


def encode_error(exc: GatewayError) -> dict[str, bytes]:
    meta = {"error": {"code": exc.code.name, "detail": exc.detail, "headers": exc.headers}}
    return {"meta": orjson.dumps(meta), "data": b""}


def decode_answer(stored: Mapping[bytes, bytes]) -> Result:
    """A worker's answer as the front returns it: a Result, or the GatewayError raised again."""
    meta = orjson.loads(stored[b"meta"])
    if "error" in meta:
        failure = meta["error"]
        raise error(Code[failure["code"]], failure["detail"], failure["headers"])
    report = RunReport(**meta["report"], ran_here=False)  # the worker counted the run where it ran
    return Result(stored.get(b"data", b"") if meta["has_data"] else None, meta["payload"], report)


class InvokeDispatcher:
    """The front's side: enqueue an invoke and wait for its answer on this front's channel."""

    def __init__(self, client: aioredis.Redis, front: str, request_timeout: float) -> None:
        self._client = client
        self.front = front
        self._timeout = request_timeout
        self._submit = client.register_script(_SUBMIT)
        self._pending: dict[str, asyncio.Future[Result]] = {}
        self._queued: set[str] = set()  # pending work whose request is in Redis (watched for its loss)
        # One read of a work's answer at a time: the answer's message, a resubscription and the watcher may
        # all read it at once, and the one that finds it already taken must not answer before the one that took it.
        self._reading: dict[str, asyncio.Lock] = {}
        self._collecting: set[asyncio.Task[None]] = set()
        self._watcher = Background("invoke-watch", self._watch)
        self.subscriber = Subscriber(client, [keys.reply(front)], self._answered, self._recover)
        self.admit: Callable[[], None] = lambda: None  # raises when no worker could answer

    def start(self) -> None:
        self.subscriber.start()
        self._watcher.start()

    async def stop(self) -> None:
        await self._watcher.stop()
        await self.subscriber.stop()

    async def invoke(self, namespace: str, call: Call[RemoteParams]) -> Result:
        self.admit()
        work_id = uuid.uuid4().hex
        request = QueuedInvoke(call.task_id, call.appkey, namespace, call.params.payload, keys.reply(self.front),
                                time.time() + self._timeout)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[work_id] = future
        self._reading[work_id] = asyncio.Lock()
        keep_ms = str(int((self._timeout + KEEP_SECONDS) * 1000))
        try:
            with redis_unavailable():
                await self._submit(keys=[keys.invoke_request(work_id), keys.invoke_input(work_id)],
                                   args=[request.encode(), bytes(call.data), keep_ms, call.appkey, work_id,
                                         str(int(time.time() * 1000))])
            self._queued.add(work_id)
            return await future
        except BaseException:
            self._queued.discard(work_id)
            if not future.done():  # the deadline passed or the client left: the worker may drop it
                future.cancel()
                await self._abandon(work_id)
            raise
        finally:
            self._queued.discard(work_id)
            self._pending.pop(work_id, None)
            self._reading.pop(work_id, None)

    async def _abandon(self, work_id: str) -> None:
        try:
            with redis_unavailable():
                await self._client.publish(keys.CANCEL, work_id)
                await self._client.delete(keys.invoke_request(work_id), keys.invoke_input(work_id))
        except GatewayError:
            pass  # the worker drops it at its deadline anyway

    def _answered(self, channel: str, data: bytes) -> None:
        work_id = data.decode()
        if work_id in self._pending:
            task = asyncio.ensure_future(self._collect(work_id))
            self._collecting.add(task)
            task.add_done_callback(self._collecting.discard)

    async def _collect(self, work_id: str) -> None:
        future, reading = self._pending.get(work_id), self._reading.get(work_id)
        if future is None or reading is None:
            return
        async with reading:
            await self._read_answer(work_id, future)

    async def _read_answer(self, work_id: str, future: asyncio.Future[Result]) -> None:
        if future.done():
            return
        try:
            with redis_unavailable():
                key = keys.invoke_output(work_id)
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.hgetall(key)
                    pipe.delete(key)
                    stored, _ = await pipe.execute()
            if not stored:
                return
            future.set_result(decode_answer(stored))
        except GatewayError as exc:
            if not future.done():
                future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - an answer this front cannot read: the client gets a 500 now
            log.exception("the answer to invoke work %s could not be read", work_id)
            if not future.done():
                future.set_exception(error(Code.INTERNAL_ERROR, type(exc).__name__))

    async def _watch(self) -> None:
        """Answer the invokes that Redis lost: their request is gone and no answer was written."""
        while True:
            await asyncio.sleep(LOST_CHECK_SECONDS)
            waiting = list(self._queued)
            if not waiting:
                continue
            try:
                with redis_unavailable():
                    async with self._client.pipeline(transaction=False) as pipe:
                        for work_id in waiting:
                            pipe.exists(keys.invoke_request(work_id))
                        found = await pipe.execute()
            except GatewayError:
                continue  # Redis away for now: the answers may still come once it is back
            for work_id, present in zip(waiting, found, strict=True):
                if not present:
                    await self._lost(work_id)

    async def _lost(self, work_id: str) -> None:
        await self._collect(work_id)  # a worker deletes the request as it writes the answer
        future = self._pending.get(work_id)
        if work_id in self._queued and future is not None and not future.done():
            log.warning("invoke work %s: its request is gone from Redis (restarted or failed over); answered 503",
                        work_id)
            future.set_exception(error(Code.BACKEND_UNAVAILABLE, "the queue lost this request (Redis restarted "
                                       "or failed over); send it again", {"Retry-After": RETRY_AFTER}))

    async def _recover(self) -> None:
        """After a lost subscription: collect answers published while it was down."""
        for work_id in list(self._pending):
            await self._collect(work_id)


def remote(inner: Namespace[Any], dispatcher: InvokeDispatcher) -> RemoteNamespace:
    """The front's stand-in for `inner`: a job namespace stays one."""
    from ..runtime.namespace import JobNamespace

    kind = RemoteJobNamespace if isinstance(inner, JobNamespace) else RemoteNamespace
    return kind(inner, dispatcher)


class RemoteNamespace:
    """A namespace as a front serves it: the real one's `parse` (and job parsing), with `run`
    sent through the queue. It loads no models."""

    def __init__(self, inner: Namespace[Any], dispatcher: InvokeDispatcher) -> None:
        self.inner = inner
        self.name = inner.name
        self.needs_input = inner.needs_input
        self.max_input_bytes = inner.max_input_bytes
        self._dispatcher = dispatcher

    def parse(self, payload: Mapping[str, Any]) -> RemoteParams:
        self.inner.parse(payload)  # refused here when bad
        return RemoteParams(dict(payload))

    async def start(self, scheduler: Scheduler) -> None:
        """Nothing to load: the workers hold the models."""

    async def stop(self) -> None:
        """Nothing to release."""

    def load_seconds(self) -> Mapping[str, float]:
        return {}

    async def run(self, call: Call[RemoteParams]) -> Result:
        return await self._dispatcher.invoke(self.name, call)


class RemoteJobNamespace(RemoteNamespace):
    """A job namespace as a front serves it: requests are checked here, jobs run on workers."""

    def parse_job(self, request: Mapping[str, Any]) -> Any:
        return self.inner.parse_job(request)  # type: ignore[attr-defined]

    def job_fields(self, params: Any) -> Mapping[str, Any]:
        return self.inner.job_fields(params)  # type: ignore[attr-defined,no-any-return]

    def job_models(self) -> Mapping[str, Any]:
        return self.inner.job_models()  # type: ignore[attr-defined,no-any-return]

    async def run_job(self, call: JobCall[Any]) -> JobOutput:
        raise error(Code.INTERNAL_ERROR, "jobs run on workers, not on a front")

    async def forget_job(self, appkey: str, job_id: str) -> None:
        """Nothing kept here: each worker forgets what it keeps of a job when the store deletes it."""
