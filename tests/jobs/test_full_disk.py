"""A data folder that fills up while jobs of two appkeys run, and frees again: a small tmpfs mounted for
the test (mounting needs root, which CI has). Nothing accepted is lost, the gateway restarts on a full
disk, and every job ends `succeeded` once there is room."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..conftest import APPKEY
from .live import OTHER_APPKEY, LiveGateway, start_gateway, stop_gateway, wait_for
from .test_faults import created, job_body, submit

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]
BIG = {"format": "wav", "sample_rate": 44100, "channels": 2}  # a 4 s stem is 705 KB: more than is left


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "disk"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A file taking all the room but `leave` bytes."""
    filler = folder / "filler"
    filler.unlink(missing_ok=True)
    size = shutil.disk_usage(folder).free - leave
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


def statuses(live: LiveGateway, jobs: dict[str, str]) -> list[str]:
    return [live.job(job_id, appkey=appkey).json()["status"] for job_id, appkey in jobs.items()]


def test_a_full_disk_delays_jobs_and_loses_none(model_store: Path, tmp_path: Path, small_disk: Path) -> None:
    extra = {"SAMI_DATA_DIR": str(small_disk / "data"), "SAMI_STEM_CACHE_BYTES": "0"}
    live = start_gateway(model_store, tmp_path, **extra)
    try:
        filler = fill(small_disk, 0)
        refused = submit(live, job_body(40, 4.0, output=BIG))
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["status_code"] == 50700001 and refused.headers["Retry-After"]
        ready = requests.get(live.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["disk"] is False

        filler.unlink()
        filler = fill(small_disk, 300 * 1024)  # room for inputs and the job store, not for results
        jobs = {created(submit(live, job_body(41, 4.0, output=BIG))): APPKEY,
                created(submit(live, job_body(42, 4.0, output=BIG), appkey=OTHER_APPKEY)): OTHER_APPKEY}
        wait_for(lambda: "the disk is full; running it again" in live.log_tail(200_000), 60, "for a retry")
        time.sleep(3)
        assert not set(statuses(live, jobs)) & {"succeeded", "failed", "cancelled"}, statuses(live, jobs)

        stop_gateway(live)  # a restart on a full disk
        live = start_gateway(model_store, tmp_path, **extra)
        assert requests.get(live.url + "/readyz", timeout=10).json()["disk"] is False
        time.sleep(3)
        assert not set(statuses(live, jobs)) & {"succeeded", "failed", "cancelled"}, statuses(live, jobs)

        filler.unlink()  # room again: everything recovers by itself
        for job_id, appkey in jobs.items():
            assert live.finished(job_id, 120, appkey)["status"] == "succeeded"
        assert requests.get(live.url + "/readyz", timeout=10).status_code == 200
        after = created(submit(live, job_body(43, 4.0, output=BIG)))
        assert live.finished(after, 60)["status"] == "succeeded"
    finally:
        stop_gateway(live)
