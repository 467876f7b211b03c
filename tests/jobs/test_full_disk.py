"""A data folder that fills up while jobs of two appkeys run, and frees again: a small tmpfs mounted for
the test (mounting needs root, which CI has). Nothing accepted is lost, the gateway restarts on a full
disk, and every job ends `succeeded` once there is room. And the storage quota's default keeps one
appkey from filling such a disk for the others."""

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


def test_by_default_one_appkey_keeps_a_quarter_of_the_disk_and_the_others_go_on(
        model_store: Path, tmp_path: Path, small_disk: Path) -> None:
    """Without a configured quota, an appkey uploading 1 MiB after 1 MiB is stopped at a quarter of the
    24 MiB disk with 429 `42900002` (the disk still has room: nothing answers 500 or 507), while the
    other appkey uploads and runs a job."""
    live = start_gateway(model_store, tmp_path, SAMI_DATA_DIR=str(small_disk / "data"), SAMI_STEM_CACHE_BYTES="0")
    try:
        mebibyte, kept = b"x" * 2**20, 0
        while True:
            slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30)
            if slot.status_code != 201:
                break
            put = requests.put(slot.json()["upload_url"], data=mebibyte, timeout=60)
            assert put.status_code == 200, put.text
            kept += 1
        assert kept == 6 and slot.status_code == 429, slot.text  # 6 MiB: a quarter of 24 MiB
        assert slot.json()["error"]["quota"] == {"exceeded": "bytes", "held": 6 * 2**20, "limit": 6 * 2**20}
        assert submit(live, job_body(50)).status_code == 429
        assert shutil.disk_usage(small_disk).free > 12 * 2**20

        slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(OTHER_APPKEY), timeout=30)
        assert slot.status_code == 201, slot.text
        assert requests.put(slot.json()["upload_url"], data=mebibyte, timeout=60).status_code == 200
        job = created(submit(live, job_body(51), appkey=OTHER_APPKEY))
        assert live.finished(job, 120, OTHER_APPKEY)["status"] == "succeeded"
        assert requests.get(live.url + "/readyz", timeout=10).status_code == 200
    finally:
        stop_gateway(live)
