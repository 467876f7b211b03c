"""An hour-long job, its stem read while it is separated (opt-in: about seven minutes with the tiny models
on two cores).

`SAMI_LONG_JOB_MINUTES=60 python3 -m pytest tests/jobs/test_long_job.py -s`. The default suite reads an
11.5-minute job the same way (`test_live.py`, `test_a_job_longer_than_an_invoke_may_be_...`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from .live import SONG_RATE, origin, read_while_processing, song, start_gateway, stop_gateway

MINUTES = float(os.environ.get("SAMI_LONG_JOB_MINUTES", "0") or 0)
COMMAND = "SAMI_LONG_JOB_MINUTES=60 python3 -m pytest tests/jobs/test_long_job.py -s"
OUTPUT = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}


@pytest.mark.skipif(not MINUTES, reason=f"opt-in, off by default (about 7 minutes for an hour): {COMMAND}")
@pytest.mark.timeout(MINUTES * 60 + 600)
def test_the_stem_of_an_hour_long_job_is_read_while_it_is_separated(model_store: Path, tmp_path: Path) -> None:
    seconds = MINUTES * 60
    audio = song(seconds, seed=90)
    gateway = start_gateway(model_store, tmp_path, SAMI_MAX_JOB_SECONDS=str(seconds + 60),
                            SAMI_MAX_JOB_INPUT_BYTES=str(2 * len(audio)), SAMI_JOB_TIMEOUT=str(4 * seconds))
    try:
        with origin({"/long.wav": audio}) as server:
            began = time.monotonic()
            answer = requests.post(gateway.url + "/api/v1/jobs", headers=gateway.headers(), timeout=60, json={
                "input": {"url": server + "/long.wav"}, "stems": ["vocals"], "output": OUTPUT})
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            streamed, first_mib, status = read_while_processing(gateway.url, gateway.headers(), job_id, "vocals")
            done = gateway.finished(job_id, seconds)
        wall = time.monotonic() - began
        finished = requests.get(f"{gateway.url}/api/v1/jobs/{job_id}/results/vocals", headers=gateway.headers(),
                                timeout=60).content
    finally:
        stop_gateway(gateway)
    print(f"\n{MINUTES:g}-minute job: first MiB of its stem {first_mib:.1f} s after processing began (the job "
          f"{status} then); {len(streamed) / 2**20:.1f} MiB read while it ran; done in {wall:.0f} s")
    assert done["status"] == "succeeded", done["error"]
    assert status == "processing" and first_mib < 30
    assert streamed == finished and len(finished) == 44 + 2 * round(seconds * SONG_RATE)
