"""The runner takes jobs round-robin across appkeys."""

from __future__ import annotations

import asyncio

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
