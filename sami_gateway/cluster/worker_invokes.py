"""A worker's handler of the invokes fronts enqueue: read one from Redis, run it, write its answer."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from ..errors import Code, GatewayError, error
from ..invoke.execute import execute
from ..runtime.metrics import Metrics
from ..runtime.namespace import InputBytes, Namespace
from ..work.queue import Work
from . import keys
from .redis_client import redis_unavailable
from .remote_invoke import KEEP_SECONDS, QueuedInvoke, encode_error, encode_result

log = logging.getLogger(__name__)
ANSWER_RETRY_SECONDS = 2.0  # an invoke's answer that met Redis away is written again this often


async def _ready(data: InputBytes) -> InputBytes:
    return data


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
        request = QueuedInvoke.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
        remaining = request.deadline - time.time()
        if remaining <= 0:
            return
        namespace = self._namespaces.get(request.namespace)
        try:
            if namespace is None:
                raise error(Code.DENIED_NAMESPACE, f"this worker does not serve {request.namespace}")
            params = namespace.parse(request.payload)  # the front checked it; here it becomes the value run
            result = await execute(request.namespace, namespace, request.task_id, request.appkey, params,
                                   _ready(data), remaining, self._metrics)  # type: ignore[arg-type]
            answer = encode_result(result)
        except GatewayError as exc:
            answer = encode_error(exc)
        except Exception:  # noqa: BLE001 - logged with the task id, answered as an internal error
            log.exception("invoke %s failed unexpectedly", request.task_id)
            answer = encode_error(error(Code.INTERNAL_ERROR))
        await self._answer_when_back(work.id, request, answer)

    async def _answer_when_back(self, work_id: str, request: QueuedInvoke, answer: dict[str, bytes]) -> None:
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
            request = QueuedInvoke.decode(raw)  # type: ignore[arg-type]  # the client gives bytes back
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
