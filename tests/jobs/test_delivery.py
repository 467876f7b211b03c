"""What leaves the gateway for a job: signed webhooks with retries, copies to the caller's storage, expiry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sami_gateway.jobs.webhooks import next_delay, signature_header

from .conftest import WEBHOOK_SECRET, MakeClient, bearer, data_input
from .test_api import finished


class Receiver:
    """A local HTTP server that records what it receives; the first `failures` answers are 500."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        if len(self.received) <= self.failures:
            return web.Response(status=500)
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def receiver_server() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(failures=2)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield receiver, f"http://127.0.0.1:{server.port}"
    await server.close()


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    parts = dict(item.split("=", 1) for item in headers["Sami-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected) and abs(time.time() - int(parts["t"])) < 300


async def test_a_webhook_that_fails_twice_is_delivered_once(make_client: MakeClient,
                                                             receiver_server: tuple[Receiver, str]) -> None:
    receiver, url = receiver_server
    client, _ = await make_client()
    job = await (await client.post("/api/v1/jobs", json={"input": data_input(), "webhook_url": url + "/hook"},
                                   headers=bearer())).json()
    await finished(client, job["id"])
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    await asyncio.sleep(1.5)  # long enough for further retries, were there any
    assert len(receiver.received) == 3
    ids = {headers["Sami-Event-Id"] for headers, _ in receiver.received}
    assert len(ids) == 1  # the same event, retried
    headers, body = receiver.received[-1]
    assert verify(headers, body, WEBHOOK_SECRET)
    assert not verify(headers, body.replace(b"succeeded", b"failed!!!"), WEBHOOK_SECRET)
    event = orjson.loads(body)
    assert event["type"] == "job.succeeded" and event["id"] in ids
    assert event["data"]["job"]["id"] == job["id"] and event["data"]["job"]["result"]["upper"]["url"]


async def test_copy_results_to_puts_the_file(make_client: MakeClient, receiver_server: tuple[Receiver, str]) -> None:
    receiver, url = receiver_server
    receiver.failures = 0
    client, _ = await make_client()
    job = await (await client.post("/api/v1/jobs", json={
        "input": data_input(b"Copy Me"), "copy_results_to": {"upper": url + "/bucket/upper.txt?sig=1"}},
        headers=bearer())).json()
    done = await finished(client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["upper"] == {"copied_to": "custom storage"}
    assert done["result"]["lower"]["size"] == 7
    assert [body for _, body in receiver.received] == [b"COPY ME"]
    response = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert response.status == 404


async def test_copy_results_to_a_failing_target_fails_the_job(make_client: MakeClient,
                                                                receiver_server: tuple[Receiver, str]) -> None:
    receiver, url = receiver_server
    client, _ = await make_client()
    job = await (await client.post("/api/v1/jobs", json={
        "input": data_input(), "copy_results_to": {"upper": url + "/x"}}, headers=bearer())).json()
    done = await finished(client, job["id"])
    assert done["status"] == "failed" and "HTTP 500" in done["error"]["message"]


async def test_webhooks_to_internal_addresses_are_refused_when_not_allowed(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_FETCH_ALLOW="")
    job = await (await client.post("/api/v1/jobs", json={"input": data_input(), "copy_results_to": {
        "upper": "http://169.254.169.254/latest"}}, headers=bearer())).json()
    done = await finished(client, job["id"])
    assert done["status"] == "failed" and "metadata" in done["error"]["message"]


async def test_expired_jobs_and_their_files_are_swept(make_client: MakeClient, tmp_path: Path) -> None:
    client, _ = await make_client(SAMI_JOB_TTL="0.5")
    job = await (await client.post("/api/v1/jobs", json={"input": data_input()}, headers=bearer())).json()
    await finished(client, job["id"])
    results = tmp_path / "data" / "blobs" / "results"
    assert list(results.iterdir())
    inputs = tmp_path / "data" / "blobs" / "inputs"
    for _ in range(50):  # the record goes first (no job is shown without its files), then its files
        response = await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer())
        if response.status == 404 and not list(results.iterdir()) and not list(inputs.iterdir()):
            break
        await asyncio.sleep(0.1)
    assert response.status == 404
    assert not list(results.iterdir()) and not list(inputs.iterdir())


def test_retry_schedule_follows_the_contract() -> None:
    import random

    rng = random.Random(1)
    delays = [next_delay(n, rng) for n in range(1, 9)]
    for got, want in zip(delays, (10, 30, 60, 300, 900, 3600, 3600, 3600), strict=True):
        assert want * 0.9 <= got <= want * 1.1
    assert signature_header("s", b"{}", 5).startswith("t=5,v1=")


async def test_restart_runs_queued_and_interrupted_jobs(make_client: MakeClient, aiohttp_client: Any) -> None:
    client, _ = await make_client(SAMI_JOB_WORKERS="1")
    slow = await (await client.post("/api/v1/jobs", json={"input": data_input(b"slow"), "output": {"delay": 30}},
                                    headers=bearer())).json()
    queued = await (await client.post("/api/v1/jobs", json={"input": data_input(b"queued")},
                                      headers=bearer())).json()
    await asyncio.sleep(0.3)
    await client.close()  # a stop: the running job goes back to the queue
    client, namespace = await make_client(SAMI_JOB_WORKERS="1")
    await asyncio.sleep(0.3)
    again = await (await client.get(f"/api/v1/jobs/{slow['id']}", headers=bearer())).json()
    assert again["status"] == "processing" and namespace.runs == 1  # the older job runs again first
    await client.post(f"/api/v1/jobs/{slow['id']}/cancel", headers=bearer())
    assert (await finished(client, queued["id"]))["status"] == "succeeded"
