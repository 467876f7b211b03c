"""The stem cache seen from two appkeys of a live `sami-gateway serve`: each appkey's own unless
SAMI_STEM_CACHE_SHARED, and its entries deleted with the last job that held them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import APPKEY
from .live import OTHER_APPKEY, LiveGateway, song, start_gateway, stop_gateway
from .test_live import created, data, refused, submit

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tenants(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A gateway of this module's own: both appkeys create jobs here (on the shared one, only one does)."""
    gateway = start_gateway(model_store, tmp_path_factory.mktemp("tenants"))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def shared_cache(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    gateway = start_gateway(model_store, tmp_path_factory.mktemp("shared-cache"), SAMI_STEM_CACHE_SHARED="true")
    yield gateway
    stop_gateway(gateway)


def entries(live: LiveGateway) -> set[str]:
    """The stem cache's entries on disk (not those being written or deleted)."""
    return {path.name for path in (live.data_dir / "stem-cache").iterdir() if not path.name.startswith(".")}


def job(live: LiveGateway, body: dict[str, Any], appkey: str = APPKEY) -> dict[str, Any]:
    """A job of `appkey`, run to its end; it succeeded."""
    done = live.finished(created(submit(live, body, appkey))["id"], appkey=appkey)
    assert done["status"] == "succeeded", done
    return done


def delete(live: LiveGateway, job_id: str, appkey: str = APPKEY) -> None:
    deleted = requests.delete(f"{live.url}/api/v1/jobs/{job_id}", headers=live.headers(appkey), timeout=30)
    assert deleted.status_code == 204, deleted.text
    refused(live.job(job_id, appkey=appkey), 404, 40400002)


def invoke_cache_hit(live: LiveGateway, audio: bytes, appkey: str) -> bool:
    answer = requests.post(live.url + "/api/v1/invoke", timeout=60, json={
        "appkey": appkey, "token": live.token(appkey), "namespace": "MusicSourceSeparate",
        "data": base64.b64encode(audio).decode(), "payload": json.dumps({"model": "2track_vocal"})})
    assert answer.status_code == 200, answer.text
    hit: bool = json.loads(answer.json()["payload"])["cache_hit"]
    return hit


def test_another_appkey_never_hits_an_appkeys_stem_cache(tenants: LiveGateway) -> None:
    live, body = tenants, {"input": data(song(1.0, seed=120)), "stems": ["vocals"]}
    assert job(live, body)["cache_hit"] is False
    assert job(live, body, OTHER_APPKEY)["cache_hit"] is False  # it learns nothing of the first appkey's song
    assert job(live, body)["cache_hit"] is True  # the first appkey's own entry still serves it
    audio = song(1.0, seed=121, rate=44100, channels=2)  # invoke, too
    assert [invoke_cache_hit(live, audio, key) for key in (APPKEY, OTHER_APPKEY, APPKEY, OTHER_APPKEY)] == \
        [False, False, True, True]


def test_delete_removes_the_stem_cache_entry_of_the_last_job_that_held_it(tenants: LiveGateway) -> None:
    live, body = tenants, {"input": data(song(1.0, seed=122)), "stems": ["vocals"]}
    before = entries(live)
    first = job(live, body)
    (mine,) = entries(live) - before
    again = job(live, body)  # a hit: it holds the entry too
    theirs = job(live, body, OTHER_APPKEY)
    (their_entry,) = entries(live) - before - {mine}
    assert again["cache_hit"] is True and theirs["cache_hit"] is False
    delete(live, first["id"])
    assert mine in entries(live)  # the appkey's other job with the same input still holds it
    delete(live, again["id"])
    assert mine not in entries(live) and not (live.data_dir / "stem-cache" / mine).exists()
    assert their_entry in entries(live)  # another appkey's entry is its own
    assert job(live, body)["cache_hit"] is False  # a resubmission separates again
    assert job(live, body, OTHER_APPKEY)["cache_hit"] is True


def test_a_shared_stem_cache_serves_every_appkey_and_goes_with_the_last_job(shared_cache: LiveGateway) -> None:
    live, body = shared_cache, {"input": data(song(1.0, seed=123)), "stems": ["vocals"]}
    before = entries(live)
    first = job(live, body)
    theirs = job(live, body, OTHER_APPKEY)
    assert first["cache_hit"] is False and theirs["cache_hit"] is True
    (entry,) = entries(live) - before
    audio = song(1.0, seed=124, rate=44100, channels=2)
    assert [invoke_cache_hit(live, audio, key) for key in (APPKEY, OTHER_APPKEY)] == [False, True]
    delete(live, first["id"])
    assert entry in entries(live)  # the other appkey's job holds it
    delete(live, theirs["id"], OTHER_APPKEY)
    assert entry not in entries(live)
    assert job(live, body, OTHER_APPKEY)["cache_hit"] is False
