"""Faults one tenant can cause or meet, against a live `sami-gateway serve`: metadata nested too deep,
a receiver answering a huge or trickling body, a job store that cannot be written. Another appkey's
jobs keep finishing, memory stays bounded, and every job ends `succeeded` or `failed`."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sami_gateway.jobs.local.sqlite_store import SqliteJobStore
from sami_gateway.jobs.model import InputKind, Job, JobStatus

from ..conftest import APPKEY
from .hostile_receiver import HUGE_REPLY_BYTES, RSS_BOUND_BYTES, memory, replier, reset_peak, warm_up
from .live import OTHER_APPKEY, SONG_RATE, LiveGateway, receiver, song, start_gateway, stop_gateway, wait_for

pytestmark = pytest.mark.timeout(300)
SMALL = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}
TERMINAL = ("succeeded", "failed", "cancelled")


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` objects deep."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def job_body(seed: int, seconds: float = 2.0, **extra: Any) -> dict[str, Any]:
    return {"input": {"data": base64.b64encode(song(seconds, seed)).decode()}, "stems": ["vocals"],
            "output": SMALL, **extra}


def submit(live: LiveGateway, body: dict[str, Any], appkey: str = APPKEY) -> requests.Response:
    return requests.post(live.url + "/api/v1/jobs", json=body, headers=live.headers(appkey), timeout=60)


def created(response: requests.Response) -> str:
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def delivered(live: LiveGateway) -> float:
    """Webhooks delivered so far (the label appears with the first)."""
    return live.metrics().get('sami_gateway_webhook_attempts_total{outcome="delivered"}', 0.0)


@pytest.fixture(scope="module")
def live(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    gateway = start_gateway(model_store, tmp_path_factory.mktemp("faults"), SAMI_WEBHOOK_TIMEOUT="30")
    yield gateway
    stop_gateway(gateway)


# -- metadata nested too deep -----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 253])
def test_metadata_nested_too_deep_is_refused_and_the_gateway_keeps_serving(live: LiveGateway, depth: int) -> None:
    with receiver() as hooks:
        response = submit(live, job_body(1, metadata=nested(depth), webhook_url=hooks.at("/deep")))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status_code"] == 40000022
    assert "32 deep" in response.json()["error"]["message"]
    listed = requests.get(live.url + "/api/v1/jobs", headers=live.headers(), timeout=30)
    assert listed.status_code == 200, listed.text
    other = created(submit(live, job_body(4), appkey=OTHER_APPKEY))
    assert live.finished(other, 120, OTHER_APPKEY)["status"] == "succeeded"


def test_metadata_32_deep_is_stored_listed_and_sent(live: LiveGateway) -> None:
    with receiver() as hooks:
        job_id = created(submit(live, job_body(2, metadata=nested(32), webhook_url=hooks.at("/deep"))))
        done = live.finished(job_id)
        assert done["status"] == "succeeded" and done["metadata"] == nested(32)
        (hook,) = wait_for(lambda: hooks.received("/deep"), 30, "for the webhook")
    assert b'"metadata":{"a":' in hook.body
    listed = requests.get(live.url + "/api/v1/jobs", headers=live.headers(), timeout=30)
    assert listed.status_code == 200 and job_id in [job["id"] for job in listed.json()["jobs"]]


def _stored_deep_jobs(db: Path, hook: str) -> list[str]:
    """Jobs as an earlier version stored them, metadata 253 deep with a webhook: one interrupted past
    its attempts, one queued. Their webhook events can never be serialised."""
    async def write() -> list[str]:
        store = SqliteJobStore(db)
        await store.open()
        ids = []
        for n, (status, attempts) in enumerate([(JobStatus.PROCESSING, 3), (JobStatus.QUEUED, 0)]):
            job = Job(id=f"job_deep{n}", appkey=APPKEY, status=status, attempts=attempts, created_at=time.time(),
                      request={"model": "htdemucs", "stems": ["vocals"], "output": SMALL}, input_kind=InputKind.URL,
                      input_ref="http://127.0.0.1:9/never", metadata=nested(253), webhook_url=hook)
            await store.create_job(job)
            ids.append(job.id)
        await store.close()
        return ids
    return asyncio.run(write())


def test_a_gateway_restarted_on_records_it_cannot_send_starts_and_ends_them(
        model_store: Path, tmp_path: Path) -> None:
    """Deep metadata stored by an earlier version: start-up does not die of it, the worker does not
    either, every job ends, and another appkey's job runs."""
    first = start_gateway(model_store, tmp_path)
    stop_gateway(first)
    with receiver() as hooks:
        deep = _stored_deep_jobs(first.data_dir / "jobs.sqlite3", hooks.at("/deep"))
        live = start_gateway(model_store, tmp_path)
        try:
            other = created(submit(live, job_body(5), appkey=OTHER_APPKEY))
            assert live.finished(other, 120, OTHER_APPKEY)["status"] == "succeeded"
            for job_id in deep:
                done = live.finished(job_id, 60)
                assert done["status"] == "failed", done
            assert live.metrics()["sami_gateway_webhook_events_dropped_total"] == 2
            assert "webhook event cannot be built; dropped" in live.log_tail(200_000)
        finally:
            stop_gateway(live)


# -- receivers that answer too much, or too slowly ----------------------------------------------------


def test_a_huge_reply_from_a_webhook_and_a_copy_target_is_not_read(live: LiveGateway) -> None:
    """A receiver answering 1.5 GB to the copy PUT and to the webhook: the gateway's peak RSS rises less
    than 100 MB above the peak of the same two jobs without it, both count as answered (2xx), and the
    other appkey's job still runs."""
    pid = live.process.pid
    seeds = iter(range(100, 200))

    def both_appkeys() -> None:  # without the fault: the model, buffers and arenas warm, and their peak
        mine = created(submit(live, job_body(next(seeds))))
        theirs = created(submit(live, job_body(next(seeds)), appkey=OTHER_APPKEY))
        live.finished(mine)
        live.finished(theirs, 120, OTHER_APPKEY)
    baseline = warm_up(pid, both_appkeys)
    sent = delivered(live)
    with replier() as hostile:
        reset_peak(pid)
        job_id = created(submit(live, job_body(7, copy_results_to={"vocals": hostile.url + "/copy"},
                                                webhook_url=hostile.url + "/hook")))
        other = created(submit(live, job_body(8), appkey=OTHER_APPKEY))
        assert live.finished(job_id)["status"] == "succeeded"
        wait_for(lambda: len(hostile.sent) == 2, 60, "for the webhook")
        assert live.finished(other, 120, OTHER_APPKEY)["status"] == "succeeded"
        growth = memory(pid, "VmHWM") - baseline
    print(f"peak RSS {growth / 2**20:+.1f} MiB from {baseline / 2**20:.0f} MiB without the fault; "
          f"reply bytes sent before the gateway left: {hostile.sent}")
    assert growth < RSS_BOUND_BYTES, f"peak RSS grew {growth / 2**20:.0f} MiB"
    assert [line.split()[0] for line in hostile.requests] == ["PUT", "POST"]
    assert max(hostile.sent) < HUGE_REPLY_BYTES
    assert delivered(live) == sent + 1


def test_a_trickling_reply_does_not_hold_the_delivery(live: LiveGateway) -> None:
    """A receiver that sends its reply a byte every half second: the attempt ends at the status line,
    long before the webhook timeout (30 s here) or the reply's end."""
    sent = delivered(live)
    with replier(trickle=True) as slow:
        job_id = created(submit(live, job_body(9, webhook_url=slow.url + "/hook")))
        live.finished(job_id)
        ended = time.monotonic()
        wait_for(lambda: delivered(live) > sent, 10, "for the delivery", interval=0.2)
        assert time.monotonic() - ended < 10


# -- a job store that cannot be written ---------------------------------------------------------------


def test_a_job_store_locked_by_another_writer_delays_jobs_and_loses_none(live: LiveGateway) -> None:
    """Another process holds SQLite's write lock for 12 s while jobs of two appkeys run: their writes
    fail (busy past 5 s), they are run again, and both end succeeded once the lock is gone."""
    db = sqlite3.connect(live.data_dir / "jobs.sqlite3", timeout=30, isolation_level=None)
    try:
        mine = created(submit(live, job_body(10)))
        other = created(submit(live, job_body(11), appkey=OTHER_APPKEY))
        db.execute("BEGIN IMMEDIATE")  # holds the write lock: every write of the gateway is refused
        time.sleep(12)
        statuses = [live.job(mine).json()["status"], live.job(other, appkey=OTHER_APPKEY).json()["status"]]
        assert all(status not in ("failed", "cancelled") for status in statuses), statuses
        db.execute("COMMIT")
    finally:
        db.close()
    assert live.finished(mine, 120)["status"] == "succeeded"
    assert live.finished(other, 120, OTHER_APPKEY)["status"] == "succeeded"
    assert "running it again" in live.log_tail(200_000)
