"""A worker in-process, on a real redis-server and weed mini: work whose last allowed run was cut
short is failed with a clear error, a job in the store and an invoke at its front."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sami_gateway.cluster import keys
from sami_gateway.cluster.remote_invoke import QueuedInvoke, decode_answer
from sami_gateway.cluster.workqueue import RedisWorkQueue
from sami_gateway.config import load_config
from sami_gateway.errors import Code, GatewayError
from sami_gateway.jobs.model import InputKind, Job, JobStatus
from sami_gateway.roles.worker import Worker
from tests.conftest import SECRET
from tests.jobs.stand_in import NS, EchoJobs
from tests.servers import Server

LEASE = 0.2


def make_worker(redis: Server, s3: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                namespaces: dict[str, Any]) -> Worker:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/worker-test", "SAMI_WORK_LEASE": str(LEASE),
                              "SAMI_MAX_JOB_ATTEMPTS": "1", "SAMI_DATA_DIR": str(tmp_path)})
    return Worker(config, namespaces=namespaces)


@pytest.fixture
async def worker(redis: Server, s3: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    made = make_worker(redis, s3, tmp_path, monkeypatch, {})
    await made.client.flushdb()
    yield made
    await made.client.aclose()


@pytest.fixture
async def echo_worker(redis: Server, s3: Server, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    """A worker that runs jobs of the stand-in namespace (its loops not started: the test drives it)."""
    made = make_worker(redis, s3, tmp_path, monkeypatch, {NS: EchoJobs()})
    await made.client.flushdb()
    await made.service.blobs.open()
    yield made
    await made.client.aclose()


async def test_a_job_whose_last_run_was_cut_short_fails_clearly(worker: Worker) -> None:
    job = Job(id="job_cut", appkey="k", status=JobStatus.QUEUED, request={"model": "htdemucs"},
              input_kind=InputKind.STORED, input_ref="inputs/job_cut", created_at=time.time())
    await worker.service.store.create_job(job)  # enqueued with it
    dead = RedisWorkQueue(worker.client, "dead-worker", LEASE)
    held = await dead.take(["batch"])
    assert held is not None and held.id == "job_cut"
    await worker.service.store.transition(job.with_(status=JobStatus.PROCESSING, attempts=1), {JobStatus.QUEUED})
    await asyncio.sleep(LEASE * 1.5)
    await worker.loop.reclaim_once()
    failed = await worker.service.store.get_job("job_cut")
    assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.status_code == 50000001
    assert failed.error.message == "its worker stopped answering; 1 runs were cut short"
    assert await dead.take(keys.CLASSES) is None  # gone from the queue
    assert worker.metrics.work_exhausted.labels("batch")._value.get() == 1


async def test_an_invoke_whose_last_run_was_cut_short_is_answered_500(worker: Worker) -> None:
    request = QueuedInvoke("task-1", "k", "MusicSourceSeparate", {}, keys.reply("front-x"), time.time() + 60)
    await worker.client.set(keys.invoke_request("w1"), request.encode())
    pubsub = worker.client.pubsub()
    await pubsub.subscribe(keys.reply("front-x"))
    dead = RedisWorkQueue(worker.client, "dead-worker", LEASE)
    await dead.enqueue("interactive", "k", keys.INVOKE, "w1")
    assert (await dead.take(["interactive"])) is not None
    await asyncio.sleep(LEASE * 1.5)
    await worker.loop.reclaim_once()
    message = None
    while message is None:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message["data"] == b"w1"
    with pytest.raises(GatewayError) as info:
        decode_answer(await worker.client.hgetall(keys.invoke_output("w1")))
    assert info.value.code is Code.INTERNAL_ERROR and "stopped answering" in info.value.detail
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_job_deleted_anywhere_is_forgotten_by_the_workers_namespace(redis: Server, s3: Server, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A front's DELETE (or any sweeper's expiry) deletes the job in Redis; each worker's namespace then
    forgets what it keeps of it (its stem cache entries, on that worker's disk)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/worker-test", "SAMI_DATA_DIR": str(tmp_path)})
    namespace = EchoJobs()
    worker = Worker(config, namespaces={NS: namespace})  # type: ignore[dict-item]
    await worker.client.flushdb()
    worker.subscriber.start()
    try:
        await asyncio.wait_for(worker.subscriber.connected.wait(), 10)
        job = Job(id="job_gone", appkey="k", status=JobStatus.SUCCEEDED, request={"model": "echo"},
                  input_kind=InputKind.STORED, input_ref="inputs/job_gone", created_at=time.time())
        await worker.service.store.create_job(job)
        await worker.service.store.delete_job("job_gone")  # as a front's DELETE does
        async with asyncio.timeout(10):
            while namespace.forgotten != [("k", "job_gone")]:
                await asyncio.sleep(0.02)
    finally:
        await worker.subscriber.stop()
        await worker.client.aclose()


async def test_one_exhausted_item_that_cannot_be_failed_does_not_stop_the_round(
        worker: Worker, caplog: pytest.LogCaptureFixture) -> None:
    await worker.client.set(keys.invoke_request("w-broken"), b"{not json")  # failing it raises
    good = QueuedInvoke("task-2", "k", "MusicSourceSeparate", {}, keys.reply("front-y"), time.time() + 60)
    await worker.client.set(keys.invoke_request("w-good"), good.encode())
    pubsub = worker.client.pubsub()
    await pubsub.subscribe(keys.reply("front-y"))
    dead = RedisWorkQueue(worker.client, "dead-worker", LEASE)
    for work_id in ("w-broken", "w-good"):  # one stream: the broken one comes first in the round
        await dead.enqueue("interactive", "k", keys.INVOKE, work_id)
        assert (await dead.take(["interactive"])) is not None
    await asyncio.sleep(LEASE * 1.5)
    await worker.loop.reclaim_once()
    message = None
    async with asyncio.timeout(10):
        while message is None:  # the subscription's own confirmation reads as None
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message["data"] == b"w-good"
    with pytest.raises(GatewayError) as info:
        decode_answer(await worker.client.hgetall(keys.invoke_output("w-good")))
    assert "stopped answering" in info.value.detail
    assert any("w-broken" in record.getMessage() and record.exc_info for record in caplog.records)
    await asyncio.sleep(LEASE * 1.5)
    _, again = await worker.queue.reclaim(1)
    assert [work.id for work in again] == ["w-broken"]  # left for a later round; the good one is gone
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_a_redis_blip_while_claiming_a_job_costs_it_no_attempt(echo_worker: Worker, redis: Server) -> None:
    worker = echo_worker
    await worker.service.blobs.put_bytes("inputs/job_blip", b"song")
    job = Job(id="job_blip", appkey="k", status=JobStatus.QUEUED, request={"stems": ["upper"]},
              input_kind=InputKind.STORED, input_ref="inputs/job_blip", created_at=time.time())
    await worker.service.store.create_job(job)
    work = await worker.queue.take(["batch"])
    assert work is not None and work.id == "job_blip"
    redis.pause()
    try:
        handled = asyncio.create_task(worker.loop.handle(work))
        await asyncio.sleep(4)  # its first read of the job times out (3 s) while Redis is stopped
    finally:
        redis.resume()
    async with asyncio.timeout(30):
        await handled
    await asyncio.sleep(LEASE * 1.5)
    await worker.loop.reclaim_once()  # a lapsed lease would be exhausted here (SAMI_MAX_JOB_ATTEMPTS=1)
    ran = await worker.service.store.get_job("job_blip")
    assert ran is not None and ran.status is JobStatus.SUCCEEDED and ran.attempts == 1, ran
    assert worker.metrics.work_exhausted.labels("batch")._value.get() == 0
