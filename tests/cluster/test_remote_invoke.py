"""A front's stand-in for a job namespace stays one: job requests and the model listing use the inner's own;
an invoke whose request Redis lost is answered 503 within seconds."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, cast

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from sami_gateway.auth.authenticator import TokenService
from sami_gateway.cluster import keys
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.remote_invoke import InvokeDispatcher, RemoteJobNamespace, RemoteParams, encode_result, remote
from sami_gateway.config import Config
from sami_gateway.errors import Code
from sami_gateway.roles.worker import Worker
from sami_gateway.runtime.namespace import Call, JobNamespace, Result, RunReport
from tests.conftest import SECRET
from tests.servers import Server

from ..jobs.stand_in import NS, EchoJobs


def test_a_job_namespace_is_forwarded_with_its_listing_and_parsers() -> None:
    inner = EchoJobs()
    front = remote(inner, cast(Any, None))  # no dispatcher: nothing here is sent through the queue
    assert isinstance(front, RemoteJobNamespace) and isinstance(front, JobNamespace)
    assert front.job_models() == inner.job_models()
    params = front.parse_job({"stems": ["upper"]})
    assert params == inner.parse_job({"stems": ["upper"]}) and front.job_fields(params)["stems"] == ["upper"]


def invoke_body() -> dict[str, str]:
    return {"appkey": "k", "token": TokenService(SECRET).issue("k", 60), "namespace": NS,
            "data": base64.b64encode(b"hello").decode(), "payload": "{}"}


async def test_an_invoke_that_redis_lost_is_answered_503_within_seconds(
        front: tuple[TestClient, aioredis.Redis, Config]) -> None:
    http, client, config = front
    waiting = asyncio.create_task(http.post("/api/v1/invoke", json=invoke_body()))
    async with asyncio.timeout(10):
        while not [key async for key in client.scan_iter(keys.invoke_request("*"))]:
            await asyncio.sleep(0.05)
    await client.flushall()  # Redis restarted empty: the request, its input and its work are gone
    lost_at = time.monotonic()
    async with asyncio.timeout(10):  # not SAMI_REQUEST_TIMEOUT (900 s)
        response = await waiting
    assert time.monotonic() - lost_at < 5
    reply = orjson.loads(await response.read())
    assert response.status == 503 and reply["status_code"] == Code.BACKEND_UNAVAILABLE.value.code == 50300003
    assert "lost" in reply["status_text"] and response.headers["Retry-After"] == "5"
    assert set(reply) >= {"task_id", "namespace", "status_code", "status_text"}
    worker = Worker(config, namespaces={NS: EchoJobs()})  # type: ignore[dict-item]
    await worker.start()
    try:  # the front keeps serving: the next invoke is answered by a worker
        async with asyncio.timeout(30):
            while (await http.get("/readyz")).status != 200:
                await asyncio.sleep(0.2)
            response = await http.post("/api/v1/invoke", json=invoke_body())
        reply = orjson.loads(await response.read())
        assert response.status == 200 and base64.b64decode(reply["data"]) == b"hello", reply
    finally:
        await worker.stop(5)


async def test_an_answer_read_as_the_watcher_finds_its_request_gone_reaches_the_client(
        redis: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis back after an outage: the answer's message and the watcher's look come at once. The worker
    deleted the request as it answered, so the watcher finds it gone while the answer is being read; the
    client gets the answer, not a 503 saying that Redis lost the request."""
    client = redis_client(redis.url)
    await client.flushdb()
    dispatcher = InvokeDispatcher(client, "front-test", 60)
    waiting = asyncio.create_task(dispatcher.invoke(NS, Call("task", "k", RemoteParams({}), b"hello")))
    async with asyncio.timeout(10):
        while not (found := [key async for key in client.scan_iter(keys.invoke_request("*"))]):
            await asyncio.sleep(0.01)
    work_id = found[0].decode().rsplit(":", 1)[1]
    answer = encode_result(Result(b"answered", {}, RunReport("echo", 1.0)))
    await client.hset(keys.invoke_output(work_id), mapping=answer)  # type: ignore[arg-type]
    await client.delete(keys.invoke_request(work_id), keys.invoke_input(work_id))  # as a worker answers
    real, reads = client.pipeline, []

    def pipeline(*args: Any, **kwargs: Any) -> Any:  # the first read of the answer comes back last
        pipe = real(*args, **kwargs)
        execute = pipe.execute

        async def slowly() -> Any:
            result = await execute()
            reads.append(result)
            if len(reads) == 1:
                await asyncio.sleep(0.2)
            return result
        pipe.execute = slowly  # type: ignore[method-assign]
        return pipe
    monkeypatch.setattr(client, "pipeline", pipeline)
    try:
        await asyncio.gather(dispatcher._collect(work_id), dispatcher._lost(work_id))
        async with asyncio.timeout(5):
            result = await waiting
        assert bytes(result.data or b"") == b"answered"
    finally:
        await client.aclose()
