"""A front in-process over the real Redis and S3: an event stream whose job Redis lost says so,
never `cancelled`; one whose job is deleted still ends `cancelled`; the Jobs API answers as the
single process does (idempotency, uploads written once); a result's redirect lives no longer than its job."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.auth.authenticator import TokenService
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.workqueue import RedisWorkQueue
from sami_gateway.config import Config, load_config
from sami_gateway.jobs.api import sse
from sami_gateway.jobs.model import InputKind, Job, JobStatus, StoredResult
from sami_gateway.web.state import JOBS
from tests.conftest import SECRET
from tests.jobs.conftest import SECRET as JOBS_SECRET
from tests.jobs.stand_in import NS, EchoJobs
from tests.jobs.test_api import idempotency_is_kept_per_request, two_puts_to_one_upload
from tests.servers import S3_READ_ACCESS_KEY, S3_READ_SECRET_KEY, Server

Front = tuple[TestClient, aioredis.Redis, Config]


def bearer() -> dict[str, str]:
    return {"Authorization": "Bearer " + TokenService(SECRET).issue("k", 600)}


async def submitted(http: TestClient) -> str:
    response = await http.post("/api/v1/jobs", headers=bearer(),
                               json={"input": {"data": base64.b64encode(b"song").decode()}})
    assert response.status in (200, 201, 202), await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def events_until_end(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events, read until it ends."""
    text = (await response.read()).decode()
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_an_event_stream_whose_job_redis_lost_says_it_was_lost(front: Front) -> None:
    http, client, _ = front
    job_id = await submitted(http)
    stream = await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer())
    reading = asyncio.create_task(events_until_end(stream))
    await asyncio.sleep(0.5)
    await client.flushall()  # Redis restarted empty: its connections drop, its state is gone
    await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    async with asyncio.timeout(10):  # the front reads its jobs again once resubscribed
        events = await reading
    assert [kind for kind, _ in events] == ["status", "error"], events
    assert all(data.get("status") != "cancelled" for _, data in events)
    failure = events[-1][1]["error"]
    assert failure["status_code"] == 40400002
    assert failure["message"] == "the job is no longer known (its state was lost)"
    missing = await http.get(f"/api/v1/jobs/{job_id}", headers=bearer())  # and the front keeps serving
    assert missing.status == 404 and (await missing.json())["error"]["status_code"] == 40400002
    await RedisWorkQueue(client, "paused-worker", 60).heartbeat()
    assert await submitted(http)


async def test_an_event_stream_whose_job_is_deleted_ends_cancelled(front: Front) -> None:
    http, _, _ = front
    job_id = await submitted(http)
    stream = await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer())
    reading = asyncio.create_task(events_until_end(stream))
    await asyncio.sleep(0.5)
    assert (await http.delete(f"/api/v1/jobs/{job_id}", headers=bearer())).status == 204
    async with asyncio.timeout(10):
        events = await reading
    assert events[-1][0] == "status" and events[-1][1]["status"] == "cancelled", events


async def test_a_job_lost_without_a_restart_is_noticed_at_the_next_keep_alive(
        front: Front, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.5)  # 15 s in service
    http, client, _ = front
    job_id = await submitted(http)
    stream = await http.get(f"/api/v1/jobs/{job_id}/events", headers=bearer())
    reading = asyncio.create_task(events_until_end(stream))
    await asyncio.sleep(0.3)
    await client.flushall()  # a failover to a replica that had not the job: no change is announced
    async with asyncio.timeout(10):
        events = await reading
    assert [kind for kind, _ in events] == ["status", "error"], events


@pytest.fixture
async def jobs_front(aiohttp_client: Any, redis: Server, s3: Server, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """A front with no worker: jobs are stored and queued, never run."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    client = redis_client(redis.url)
    await client.flushdb()
    await client.aclose()
    config = load_config({}, {"SAMI_TOKEN_SECRET": JOBS_SECRET, "SAMI_APPKEYS": "k,other", "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/front-{tmp_path.name}",
                              "SAMI_DATA_DIR": str(tmp_path / "data")})
    made: TestClient = await aiohttp_client(create_app(config, {NS: EchoJobs()}))  # type: ignore[dict-item]
    return made


async def test_an_idempotency_key_names_one_request_in_scale_out(jobs_front: TestClient) -> None:
    await idempotency_is_kept_per_request(jobs_front)


async def test_of_two_puts_to_one_upload_the_refused_one_leaves_no_byte_in_scale_out(jobs_front: TestClient) -> None:
    await two_puts_to_one_upload(jobs_front)


async def succeeded(http: TestClient, job_id: str, expires_in: float) -> tuple[str, str]:
    """A job of `k` that succeeded with a `vocals` result and expires in `expires_in` seconds: the URL
    its JSON gives, and where its results route redirects."""
    jobs = http.app[JOBS]
    now = time.time()
    key = f"results/{job_id}/vocals.wav"
    await jobs.blobs.put_bytes(key, b"RIFF-vocals")
    queued = Job(id=job_id, appkey="k", status=JobStatus.QUEUED, request={"stems": ["vocals"]},
                 input_kind=InputKind.STORED, input_ref=f"inputs/{job_id}", created_at=now)
    await jobs.store.create_job(queued)
    done = queued.with_(status=JobStatus.SUCCEEDED, completed_at=now, expires_at=now + expires_in,
                        result={"vocals": StoredResult(key, "wav", 11)})
    assert await jobs.store.transition(done, {JobStatus.QUEUED})
    listed = (await (await http.get(f"/api/v1/jobs/{job_id}", headers=bearer())).json())["result"]["vocals"]["url"]
    answer = await http.get(f"/api/v1/jobs/{job_id}/results/vocals", headers=bearer(), allow_redirects=False)
    assert answer.status == 302
    return listed, answer.headers["Location"]


def signed(url: str, name: str) -> str:
    """A query parameter of a presigned URL (`X-Amz-Expires`, `X-Amz-Credential`...)."""
    return parse_qs(urlsplit(url).query)[name][0]


async def test_a_result_redirect_is_signed_no_longer_than_the_job_lives(front: Front) -> None:
    """The 302 to storage, as the job's JSON, is valid SAMI_SIGNED_URL_TTL (3600 s here), never past
    the job's expiry: a job expiring in 30 s is answered with a URL of at most 30 s."""
    http, _, _ = front
    for url in await succeeded(http, "job_short", 30):
        assert 1 <= int(signed(url, "X-Amz-Expires")) <= 30, url


async def test_result_urls_are_signed_by_the_read_only_identity_when_one_is_set(
        aiohttp_client: Any, redis: Server, s3: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    client = redis_client(redis.url)
    await client.flushdb()
    await client.aclose()
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/front-{tmp_path.name}",
                              "SAMI_STORAGE_READ_ACCESS_KEY_ID": S3_READ_ACCESS_KEY,
                              "SAMI_STORAGE_READ_SECRET_ACCESS_KEY": S3_READ_SECRET_KEY,
                              "SAMI_DATA_DIR": str(tmp_path / "data")})
    http = await aiohttp_client(create_app(config, {NS: EchoJobs()}))  # type: ignore[dict-item]
    for url in await succeeded(http, "job_read", 600):
        assert signed(url, "X-Amz-Credential").split("/")[0] == S3_READ_ACCESS_KEY, url
        async with http.session.get(url) as download:  # the storage itself, without the gateway's token
            assert (download.status, await download.read()) == (200, b"RIFF-vocals")
