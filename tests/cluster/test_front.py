"""A scale-out front in-process (its jobs in a real redis-server, its files in weed mini's S3): the
Jobs API answers as the single process does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.servers import Server
from sami_gateway.config import load_config
from tests.jobs.conftest import SECRET
from tests.jobs.stand_in import NS, EchoJobs
from tests.jobs.test_api import idempotency_is_kept_per_request, two_puts_to_one_upload


@pytest.fixture
async def front(aiohttp_client: Any, redis: Server, s3: Server, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> TestClient:
    """A front with no worker: jobs are stored and queued, never run."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    client = redis_client(redis.url)
    await client.flushdb()
    await client.aclose()
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k,other", "SAMI_QUEUE_URL": redis.url,
                              "SAMI_STORAGE_URL": f"{s3.url}/front-{tmp_path.name}",
                              "SAMI_DATA_DIR": str(tmp_path / "data")})
    made: TestClient = await aiohttp_client(create_app(config, {NS: EchoJobs()}))  # type: ignore[dict-item]
    return made


async def test_an_idempotency_key_names_one_request_in_scale_out(front: TestClient) -> None:
    await idempotency_is_kept_per_request(front)


async def test_of_two_puts_to_one_upload_the_refused_one_leaves_no_byte_in_scale_out(front: TestClient) -> None:
    await two_puts_to_one_upload(front)
