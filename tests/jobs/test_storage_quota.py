"""Storage quotas: what fits, the refusal and its JSON, the defaults and the per-appkey limits of the
configuration, then each way in over HTTP (against the stand-in namespace). Each store's accounting,
on SQLite and Redis side by side, is in tests/cluster/test_redis_store.py; two appkeys of a live
gateway in test_live_storage_quota.py."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData

from sami_gateway.config import ConfigError, load_config
from sami_gateway.config.jobs import job_settings
from sami_gateway.errors import Code, error
from sami_gateway.jobs.storage_quota import (
    RETRY_AFTER_SECONDS,
    AppkeyStorageLimits,
    StorageLimits,
    StorageQuotaExceeded,
    StorageUsage,
    default_limits,
    default_storage_bytes,
    exceeded,
    over,
)
from sami_gateway.jobs.views import error_body
from sami_gateway.web.state import JOBS

from .conftest import MakeClient, bearer, data_input
from .test_api import error_of, finished, submit

LIMITS = StorageLimits(stored_bytes=100, uploads=2, jobs=3)
SECRET = {"SAMI_TOKEN_SECRET": "k" * 32}


def what(held: StorageUsage, adding: StorageUsage) -> Any:
    refusal = exceeded(held, adding, LIMITS)
    return None if refusal is None else refusal.quota["exceeded"]


def test_what_fits_and_what_is_refused() -> None:
    assert what(StorageUsage(60, 1, 2), StorageUsage(40, 0, 1)) is None  # exactly full is allowed
    assert what(StorageUsage(60, 1, 2), StorageUsage(41, 0, 1)) == "bytes"
    assert what(StorageUsage(99, 0, 0), StorageUsage(0, 1, 0)) is None
    assert what(StorageUsage(100, 0, 0), StorageUsage(0, 1, 0)) == "bytes"  # a new upload or job needs room
    assert what(StorageUsage(100, 0, 0), StorageUsage(0, 0, 1)) == "bytes"
    assert what(StorageUsage(0, 2, 0), StorageUsage(0, 1, 0)) == "uploads"
    assert what(StorageUsage(0, 2, 3), StorageUsage(50, 0, 0)) is None  # an upload's bytes, counts full
    assert what(StorageUsage(0, 0, 3), StorageUsage(0, 0, 1)) == "jobs"
    assert what(StorageUsage(100, 2, 3), StorageUsage(1, 1, 1)) == "bytes"  # bytes are named first


def test_over_is_past_the_bytes_only() -> None:
    assert over(StorageUsage(100, 2, 3), LIMITS) is None
    refusal = over(StorageUsage(101, 0, 0), LIMITS)
    assert refusal is not None and refusal.quota == {"exceeded": "bytes", "held": 101, "limit": 100}


def test_the_refusal_is_a_429_whose_json_says_what_is_full() -> None:
    refusal = exceeded(StorageUsage(90, 0, 1), StorageUsage(20, 0, 1), LIMITS)
    assert isinstance(refusal, StorageQuotaExceeded) and refusal.code is Code.STORAGE_QUOTA_EXCEEDED
    assert (refusal.status.http, refusal.status.code) == (429, 42900002)
    assert refusal.headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    body = error_body("req", refusal)
    assert body["error"]["quota"] == {"exceeded": "bytes", "held": 90, "limit": 100}
    assert body["error"]["status_text"] == "StorageQuotaExceeded"
    assert "bytes: it holds 90 + 20 more, at most 100" in body["error"]["message"]
    assert "quota" not in error_body("req", error(Code.CONFLICT, "x"))["error"]  # other errors


def test_the_default_bytes_are_a_quarter_of_the_data_folders_disk(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    seen = []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: seen.append(path) or usage._replace(total=4003, free=0))
    assert default_storage_bytes(tmp_path) == 1000  # the disk's size: however full it is now
    assert default_storage_bytes(tmp_path / "not" / "yet") == 1000 and seen[-1] == tmp_path  # the nearest folder


def test_settings_and_each_appkeys_own_limits(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('[appkeys.big]\nstorage_bytes = 5000000\nmax_stored_jobs = 50\n'
                    '[appkeys.plain]\nrate = 5.0\n')
    env = {**SECRET, "SAMI_CONFIG": str(file), "SAMI_DATA_DIR": str(tmp_path / "data"),
           "SAMI_STORAGE_BYTES_PER_APPKEY": "1000", "SAMI_MAX_UPLOADS_PER_APPKEY": "7"}
    config = load_config({}, env)
    defaults = default_limits(job_settings(config))
    assert defaults == StorageLimits(stored_bytes=1000, uploads=7, jobs=10_000)
    limits = AppkeyStorageLimits(config)
    assert limits("big") == StorageLimits(5_000_000, 7, 50)
    assert limits("plain") == defaults
    assert limits("unknown") == defaults
    file.write_text('[appkeys.big]\nstorage_bytes = 6000000\n')  # a reload (SIGHUP) replaces them
    limits.replace(load_config({}, env))
    assert limits("big") == StorageLimits(6_000_000, 7, 10_000)
    measured = default_limits(job_settings(load_config({}, {**SECRET, "SAMI_DATA_DIR": str(tmp_path / "data")})))
    assert measured.stored_bytes == default_storage_bytes(tmp_path / "data")


@pytest.mark.parametrize("name", ["SAMI_STORAGE_BYTES_PER_APPKEY", "SAMI_MAX_UPLOADS_PER_APPKEY",
                                  "SAMI_MAX_STORED_JOBS_PER_APPKEY"])
@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_limit_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({}, {**SECRET, name: value})


@pytest.mark.parametrize("line", ["storage_bytes = 0", "max_uploads = -1", 'max_stored_jobs = "10"',
                                  "storage_bytes = true", "max_uploads = 1.5"])
def test_a_bad_limit_of_an_appkey_is_refused_with_its_name(tmp_path: Path, line: str) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(f"[appkeys.k]\n{line}\n")
    with pytest.raises(ConfigError, match=f"SAMI_APPKEYS.*appkey 'k': {line.split()[0]} must be a positive integer"):
        load_config({}, {**SECRET, "SAMI_CONFIG": str(file)})


# -- over HTTP ---------------------------------------------------------------------------------------


async def full(response: Any, exceeded: str) -> dict[str, Any]:
    body = await error_of(response, 429, 42900002)
    assert body["error"]["quota"]["exceeded"] == exceeded and response.headers["Retry-After"]
    return body


def relative(url: str) -> str:
    return url[url.index("/api/"):]


async def test_each_way_in_is_refused_past_the_bytes_and_leaves_nothing(make_client: MakeClient,
                                                                        tmp_path: Path) -> None:
    client, _ = await make_client(SAMI_STORAGE_BYTES_PER_APPKEY="1000")
    jobs = client.app[JOBS]
    upload = await (await client.post("/api/v1/uploads", headers=bearer())).json()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused once the bytes are stored
        for _ in range(11):
            yield b"x" * 91

    await full(await client.put(relative(upload["upload_url"]), data=chunked()), "bytes")
    await full(await client.put(relative(upload["upload_url"]), data=b"x" * 1001), "bytes")  # by Content-Length
    assert await jobs.blobs.folders("uploads") == set() and not list((tmp_path / "data" / "tmp").glob("part-*"))
    assert (await client.put(relative(upload["upload_url"]), data=b"Song" * 25)).status == 200  # may be PUT again
    assert await jobs.store.usage("k") == StorageUsage(100, 1, 0)

    form = FormData()
    form.add_field("file", b"x" * 901, filename="song.mp3", content_type="audio/mpeg")
    form.add_field("params", "{}", content_type="application/json")
    await full(await client.post("/api/v1/jobs", data=form, headers=bearer()), "bytes")
    await full(await submit(client, {"input": data_input(b"x" * 901)}), "bytes")
    await full(await submit(client, {"input": data_input(b"x" * 901)}, {"Idempotency-Key": "big"}), "bytes")
    assert await jobs.blobs.folders("uploads") == {upload["upload_id"]} and await jobs.blobs.folders("inputs") == set()
    assert await jobs.store.usage("k") == StorageUsage(100, 1, 0)
    other = await client.post("/api/v1/jobs", json={"input": data_input(b"x" * 901)}, headers=bearer("other"))
    assert other.status == 201, await other.text()

    fits = await submit(client, {"input": {"upload_id": upload["upload_id"]}, "stems": ["upper"]})
    assert (await finished(client, (await fits.json())["id"]))["status"] == "succeeded"
    assert await jobs.store.usage("k") == StorageUsage(300, 1, 1)  # the upload, the job's input and its stem


async def test_an_appkey_over_its_bytes_has_its_queued_jobs_failed_until_it_frees_some(
        make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_STORAGE_BYTES_PER_APPKEY="100", SAMI_JOB_WORKERS="1")
    slow = {"input": data_input(b"x" * 40), "output": {"delay": 0.3}}  # three stems: 120 bytes of results
    first = await (await submit(client, slow)).json()
    second = await (await submit(client, slow)).json()  # 80 bytes held: it fits, its results will not
    assert (await finished(client, first["id"]))["status"] == "succeeded"
    refused = await finished(client, second["id"])
    assert refused["status"] == "failed" and refused["result"] is None
    assert refused["error"]["status_code"] == 42900002 and "bytes" in refused["error"]["message"]
    await full(await submit(client, slow), "bytes")
    assert (await client.delete(f"/api/v1/jobs/{first['id']}", headers=bearer())).status == 204
    again = await (await submit(client, slow)).json()
    assert (await finished(client, again["id"]))["status"] == "succeeded"


async def test_a_full_appkey_still_gets_the_job_its_idempotency_key_named(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_MAX_STORED_JOBS_PER_APPKEY="1", SAMI_MAX_UPLOADS_PER_APPKEY="1")
    body = {"input": data_input(), "stems": ["upper"]}
    first = await submit(client, body, {"Idempotency-Key": "once"})
    assert first.status == 201
    again = await submit(client, body, {"Idempotency-Key": "once"})
    assert again.status == 200 and (await again.json())["id"] == (await first.json())["id"]
    await full(await submit(client, body, {"Idempotency-Key": "another"}), "jobs")
    await full(await submit(client, body), "jobs")
    assert (await client.post("/api/v1/uploads", headers=bearer())).status == 201
    await full(await client.post("/api/v1/uploads", headers=bearer()), "uploads")
    assert (await client.post("/api/v1/uploads", headers=bearer("other"))).status == 201
    assert (await client.get("/api/v1/jobs", headers=bearer())).status == 200  # reading is never refused
