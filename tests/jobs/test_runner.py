"""The runner takes jobs round-robin across appkeys."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from sami_gateway.errors import Code, error
from sami_gateway.web.state import JOBS

from .conftest import MakeClient, bearer, data_input
from .test_api import finished


async def test_one_appkeys_backlog_does_not_starve_another(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_JOB_WORKERS="1")
    body = {"input": data_input(), "stems": ["upper"], "output": {"delay": 0.1}}
    backlog = [(await (await client.post("/api/v1/jobs", json=body, headers=bearer())).json())["id"]
               for _ in range(10)]
    single = (await (await client.post("/api/v1/jobs", json=body, headers=bearer("other"))).json())["id"]
    done = await finished(client, single, "other")
    assert done["status"] == "succeeded"
    states = await asyncio.gather(*(client.get(f"/api/v1/jobs/{job_id}", headers=bearer()) for job_id in backlog))
    succeeded = [(await state.json())["status"] for state in states].count("succeeded")
    assert succeeded <= 3, f"{succeeded} of the backlog ran before the other appkey's job"


async def test_progress_the_store_refuses_is_skipped_and_the_job_succeeds(
        make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    """Storage away while a job reports progress (Redis paused, SQLite locked): the writes are dropped
    without an unhandled exception in the loop, and the job ends succeeded once its own writes pass."""
    client, _ = await make_client()
    store = client.app[JOBS].store
    refused: list[float] = []

    async def set_progress(job_id: str, progress: float, ready: object = None) -> None:
        refused.append(progress)
        raise error(Code.BACKEND_UNAVAILABLE, "redis: TimeoutError")
    store.set_progress = set_progress  # type: ignore[method-assign]
    body = {"input": data_input(), "stems": ["upper", "lower", "reversed"], "output": {"delay": 0.3}}
    job_id = (await (await client.post("/api/v1/jobs", json=body, headers=bearer())).json())["id"]
    assert (await finished(client, job_id))["status"] == "succeeded"
    gc.collect()  # a task whose exception nobody retrieved is reported when it is collected
    await asyncio.sleep(0)
    assert refused, "the job reported progress"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
