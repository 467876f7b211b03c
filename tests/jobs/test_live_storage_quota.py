"""Storage quotas seen from two appkeys of a live `sami-gateway serve` on one data folder: the appkey
that fills its quota of bytes, uploads or jobs is refused 429 `42900002` naming what is full, the
other one goes on uploading and running jobs, and the room comes back as uploads and jobs expire or
are deleted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import APPKEY
from .live import OTHER_APPKEY, SONG_RATE, LiveGateway, song, start_gateway, stop_gateway, wait_for
from .test_live import created, data, refused, submit

pytestmark = pytest.mark.timeout(300)
SMALL = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}
SONG_BYTES = len(song(5.0, 0))  # a 5-second song: 80 KB, and so is its one stem
QUOTA_BYTES = 3 * SONG_BYTES + SONG_BYTES // 2  # room for an upload and a job of one song, not one more song
UPLOAD_TTL = 4.0


@pytest.fixture
def bytes_quota(model_store: Path, tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = start_gateway(model_store, tmp_path, SAMI_STORAGE_BYTES_PER_APPKEY=str(QUOTA_BYTES),
                            SAMI_UPLOAD_TTL=str(UPLOAD_TTL), SAMI_STEM_CACHE_BYTES="0")
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def count_quota(model_store: Path, tmp_path: Path) -> Iterator[LiveGateway]:
    gateway = start_gateway(model_store, tmp_path, SAMI_MAX_UPLOADS_PER_APPKEY="2",
                            SAMI_MAX_STORED_JOBS_PER_APPKEY="2", SAMI_JOB_TTL="4", SAMI_STEM_CACHE_BYTES="0")
    yield gateway
    stop_gateway(gateway)


def body(seed: int, seconds: float = 5.0) -> dict[str, Any]:
    return {"input": data(song(seconds, seed)), "stems": ["vocals"], "output": SMALL}


def new_upload(live: LiveGateway, appkey: str = APPKEY) -> requests.Response:
    return requests.post(live.url + "/api/v1/uploads", headers=live.headers(appkey), timeout=30)


def put(slot: dict[str, Any], content: bytes) -> requests.Response:
    return requests.put(slot["upload_url"], data=content, timeout=60)


def uploaded(live: LiveGateway, content: bytes, appkey: str = APPKEY) -> str:
    """A new upload of `appkey` holding `content`: its id."""
    slot = new_upload(live, appkey)
    assert slot.status_code == 201, slot.text
    done = put(slot.json(), content)
    assert done.status_code == 200, done.text
    upload_id: str = slot.json()["upload_id"]
    return upload_id


def succeeded(live: LiveGateway, response: requests.Response, appkey: str = APPKEY) -> dict[str, Any]:
    job = live.finished(created(response)["id"], appkey=appkey)
    assert job["status"] == "succeeded", job
    return job


def full(response: requests.Response, what: str) -> dict[str, Any]:
    """The storage quota's 429: the error JSON names what is full, with what is held and allowed."""
    error: dict[str, Any] = refused(response, 429, 42900002)["error"]
    assert error["status_text"] == "StorageQuotaExceeded" and what in error["message"], error
    assert error["quota"]["exceeded"] == what and error["quota"]["held"] <= error["quota"]["limit"], error
    assert int(response.headers["Retry-After"]) > 0
    return error


def delete(live: LiveGateway, job_id: str, appkey: str = APPKEY) -> None:
    response = requests.delete(f"{live.url}/api/v1/jobs/{job_id}", headers=live.headers(appkey), timeout=30)
    assert response.status_code == 204, response.text


def test_an_appkey_out_of_bytes_is_refused_while_another_uploads_and_runs_jobs(bytes_quota: LiveGateway) -> None:
    live = bytes_quota
    first_upload = uploaded(live, song(5.0, 1))
    job = succeeded(live, submit(live, body(2)))  # its input and its stem: the appkey holds three songs
    slot = new_upload(live)
    assert slot.status_code == 201, slot.text
    error = full(put(slot.json(), song(5.0, 3)), "bytes")
    assert error["quota"]["limit"] == QUOTA_BYTES
    full(submit(live, body(4)), "bytes")
    full(submit(live, {"input": {"upload_id": first_upload}, "stems": ["vocals"], "output": SMALL}), "bytes")

    other_upload = uploaded(live, song(5.0, 5), OTHER_APPKEY)  # the other appkey, on the same data folder
    succeeded(live, submit(live, {"input": {"upload_id": other_upload}, "stems": ["vocals"], "output": SMALL},
                           OTHER_APPKEY), OTHER_APPKEY)

    began = time.monotonic()  # the first upload expires UPLOAD_TTL after its PUT: its bytes are free again
    wait_for(lambda: put(slot.json(), song(5.0, 3)).status_code == 200, 30, "for the upload to expire")
    assert time.monotonic() - began < UPLOAD_TTL + 5
    full(submit(live, body(7)), "bytes")
    delete(live, job["id"])  # its input and its stem are free again
    succeeded(live, submit(live, body(8)))


def test_an_appkey_out_of_uploads_or_jobs_is_refused_until_one_is_deleted_or_expires(
        count_quota: LiveGateway) -> None:
    live = count_quota
    for _ in range(2):
        assert new_upload(live).status_code == 201
    full(new_upload(live), "uploads")
    assert new_upload(live, OTHER_APPKEY).status_code == 201

    first = created(submit(live, body(11, 1.0)))
    second = created(submit(live, body(12, 1.0)))
    full(submit(live, body(13, 1.0)), "jobs")
    succeeded(live, submit(live, body(14, 1.0), OTHER_APPKEY), OTHER_APPKEY)
    delete(live, first["id"])
    third = succeeded(live, submit(live, body(15, 1.0)))
    full(submit(live, body(16, 1.0)), "jobs")

    assert live.finished(second["id"])["status"] == "succeeded"
    gone = [second["id"], third["id"]]  # both end and expire 4 s later: the appkey may keep two again
    wait_for(lambda: all(live.job(job_id).status_code == 404 for job_id in gone), 30, "for the jobs to expire")
    succeeded(live, submit(live, body(17, 1.0)))
    succeeded(live, submit(live, body(18, 1.0)))
