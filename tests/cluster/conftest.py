"""A real SeaweedFS (S3) server on loopback for the session (Redis: tests/conftest.py); a front in-process over them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.workqueue import RedisWorkQueue
from sami_gateway.config import Config, load_config
from tests.conftest import SECRET
from tests.jobs.stand_in import NS, EchoJobs
from tests.servers import Server, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
async def front(aiohttp_client: Any, redis: Server, s3: Server, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, aioredis.Redis, Config]]:
    """A front in-process over the real Redis and S3 with the stand-in namespace, and a worker's
    heartbeat so that work is admitted (no worker runs: invokes and jobs wait)."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    client = redis_client(redis.url)
    await client.flushdb()
    await RedisWorkQueue(client, "paused-worker", 60).heartbeat()
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/front-test", "SAMI_WORK_LEASE": "60",
                              "SAMI_DATA_DIR": str(tmp_path)})
    yield await aiohttp_client(create_app(config, {NS: EchoJobs()})), client, config  # type: ignore[dict-item]
    await client.aclose()
