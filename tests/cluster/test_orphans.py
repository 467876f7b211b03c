"""Objects in the storage that no job or upload refers to, on a real redis-server and weed mini: a
worker deletes them once they are older than the grace, never what a live job or upload holds, and
one worker of the fleet sweeps at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sami_gateway.cluster import keys
from sami_gateway.cluster.orphans import OrphanSweeper, orphan_grace
from sami_gateway.config import load_config
from sami_gateway.jobs.blobs import BlobStore
from sami_gateway.jobs.model import InputKind, Job, JobStatus, Upload
from sami_gateway.roles.worker import Worker
from tests.conftest import SECRET
from tests.jobs.stand_in import NS, EchoJobs
from tests.servers import Server

GRACE = 2.0


@pytest.fixture
async def worker(redis: Server, s3: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    """A worker on a prefix of its own (its loops not started unless the test starts them)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/orphans-{tmp_path.name}",
                              "SAMI_DATA_DIR": str(tmp_path)})
    made = Worker(config, namespaces={NS: EchoJobs()})  # type: ignore[dict-item]
    await made.client.flushdb()
    await made.service.blobs.open()
    yield made
    await made.client.aclose()


async def live_job(worker: Worker, job_id: str) -> None:
    """A job in Redis with its input and a result in the storage."""
    blobs = worker.service.blobs
    await blobs.put_bytes(f"inputs/{job_id}", b"song")
    await blobs.put_bytes(f"results/{job_id}/upper.wav", b"SONG")
    await worker.service.store.create_job(Job(id=job_id, appkey="k", status=JobStatus.QUEUED, request={},
                                              input_kind=InputKind.STORED, input_ref=f"inputs/{job_id}",
                                              created_at=time.time()))


async def leftovers(blobs: BlobStore) -> None:
    """What fronts and workers that died, or a job deleted mid-run, leave: objects nobody refers to."""
    await blobs.put_bytes("inputs/job_dead", b"song")  # a front died between storing the input and creating the job
    await blobs.put_bytes("results/job_gone/upper.wav", b"SONG")  # its job deleted while the worker wrote it
    await blobs.put_bytes("uploads/form_0123", b"song")  # a form's file whose front died before the job
    await blobs.put_bytes("uploads/upl_x.put-0123", b"song")  # a PUT's bytes whose front died before the claim


async def everything(blobs: BlobStore) -> dict[str, set[str]]:
    return {area: await blobs.folders(area) for area in ("inputs", "results", "uploads")}


async def test_objects_no_job_refers_to_go_after_the_grace_and_live_ones_stay(worker: Worker) -> None:
    blobs, store = worker.service.blobs, worker.service.store
    sweeper = worker.orphans
    sweeper.grace, sweeper.interval = GRACE, 0.1
    await live_job(worker, "job_live")
    await store.create_upload(Upload("upl_live", "k", time.time(), time.time() + 3600, 100))
    await blobs.put_bytes("uploads/upl_live", b"song")
    await leftovers(blobs)
    assert await sweeper.sweep_if_due() == 0  # all of it younger than the grace: a front may be about to record it
    assert (await everything(blobs))["inputs"] == {"job_live", "job_dead"}

    await asyncio.sleep(GRACE + 1.2)
    await blobs.put_bytes("inputs/job_fresh", b"song")  # stored just now: within the grace, kept
    await asyncio.sleep(sweeper.interval)
    assert await sweeper.sweep_if_due() == 4
    assert await everything(blobs) == {"inputs": {"job_live", "job_fresh"}, "results": {"job_live"},
                                       "uploads": {"upl_live"}}
    assert bytes(await blobs.read("inputs/job_live")) == b"song"  # the live job still runs from its input


async def test_an_upload_claimed_whose_bytes_never_arrived_is_forgotten_after_the_grace(worker: Worker) -> None:
    """A PUT that died between its claim and its move leaves an upload no job can use."""
    store, sweeper = worker.service.store, worker.orphans
    sweeper.grace, sweeper.interval = GRACE, 0.1
    now = time.time()
    await store.create_upload(Upload("upl_lost", "k", now, now + 3600, 100, completed_at=now, size=4, sha256="0" * 64))
    await store.create_upload(Upload("upl_waiting", "k", now, now + 3600, 100))  # not PUT yet: stays
    assert await sweeper.sweep_if_due() == 0  # claimed just now: its move may be under way
    await asyncio.sleep(GRACE + 0.5)
    assert await sweeper.sweep_if_due() == 1
    assert await store.get_upload("upl_lost") is None
    assert await store.get_upload("upl_waiting") is not None


async def test_one_worker_of_the_fleet_sweeps_per_interval(worker: Worker) -> None:
    sweepers = [OrphanSweeper(worker.client, worker.sweeper, f"w{index}", GRACE, interval=1.0) for index in range(3)]
    turns = await asyncio.gather(*(sweeper.sweep_if_due() for sweeper in sweepers))
    assert sorted(turns, key=lambda turn: turn is None) == [0, None, None]
    assert await worker.client.get(keys.ORPHAN_SWEEP) in {b"w0", b"w1", b"w2"}
    assert 0 < await worker.client.pttl(keys.ORPHAN_SWEEP) <= 1000
    await asyncio.sleep(1.1)
    assert await sweepers[1].sweep_if_due() == 0  # the turn lapsed: the next one to ask sweeps


async def test_a_running_worker_sweeps_by_itself(worker: Worker) -> None:
    blobs = worker.service.blobs
    await live_job(worker, "job_live")
    await leftovers(blobs)
    worker.orphans.grace, worker.orphans.interval = GRACE, 0.4
    await asyncio.sleep(GRACE + 1.2)
    await worker.start()
    try:
        left = {"inputs": {"job_live"}, "results": {"job_live"}, "uploads": set()}
        async with asyncio.timeout(10):  # one area after another: done when the last one is swept
            while await everything(blobs) != left:
                await asyncio.sleep(0.1)
    finally:
        await worker.stop(1.0)


def test_the_grace_outlasts_a_file_body_with_a_margin() -> None:
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET})
    assert orphan_grace(config) == pytest.approx(config.body_timeout + config.max_job_input_bytes / 1e8 + 600)
