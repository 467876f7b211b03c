"""A front in-process over the real Redis and S3: an event stream whose job Redis lost says so,
never `cancelled`; one whose job is deleted still ends `cancelled`."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from sami_gateway.auth import TokenService
from sami_gateway.cluster.workqueue import WorkQueue
from sami_gateway.config import Config
from sami_gateway.jobs import sse
from tests.conftest import SECRET

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
    await WorkQueue(client, "paused-worker", 60).heartbeat()
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
