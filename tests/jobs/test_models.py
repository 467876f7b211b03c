"""`GET /api/v1/models` over HTTP: Bearer like every Jobs API route, the namespace's listing as sent, and
on the real namespace (the tiny demo store) every model listed is one `POST /api/v1/jobs` accepts."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.config import load_config

from .conftest import SECRET, MakeClient, bearer
from .stand_in import InvokeOnly
from .test_api import error_of

MODELS = "/api/v1/models"
NOT_AUDIO = {"data": base64.b64encode(b"not audio: the job fails at decoding, no model runs").decode()}


async def test_the_namespace_listing_is_answered_to_a_bearer(make_client: MakeClient) -> None:
    client, namespace = await make_client()
    response = await client.get(MODELS, headers=bearer())
    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == namespace.job_models()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic eA=="}])
async def test_without_a_valid_token_401(make_client: MakeClient, headers: dict[str, str]) -> None:
    client, _ = await make_client()
    await error_of(await client.get(MODELS, headers=headers), 401, 40200002)
    assert (await client.get(MODELS, headers=bearer())).status == 200  # and the next request is answered


async def test_a_listing_is_refused_as_submission_is_when_no_namespace_runs_jobs(aiohttp_client: Any,
                                                                                tmp_path: Path) -> None:
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_DATA_DIR": str(tmp_path)})
    client = await aiohttp_client(create_app(config, {"Plain": InvokeOnly()}))  # type: ignore[dict-item]
    listed = await error_of(await client.get(MODELS, headers=bearer()), 400, 40200014)
    submitted = await error_of(await client.post("/api/v1/jobs", json={"input": NOT_AUDIO}, headers=bearer()),
                               400, 40200014)
    assert listed["error"]["message"] == submitted["error"]["message"]


# The real namespace on a copy of the demo store.

@pytest.fixture
async def real(aiohttp_client: Any, model_store: Path, tmp_path: Path) -> AsyncIterator[tuple[TestClient, Path]]:
    from namespaces.music_source_separate.plugin import NAME, create_namespace

    store = tmp_path / "store"
    shutil.copytree(model_store, store)
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k", "SAMI_DATA_DIR": str(tmp_path / "d"),
                              "SAMI_MODEL_DIR": str(store), "SAMI_THREADS": "1", "SAMI_JOB_WORKERS": "1",
                              "SAMI_STEM_CACHE_BYTES": "0", "SAMI_QUOTA_RATE": "1000", "SAMI_QUOTA_BURST": "1000"})
    yield await aiohttp_client(create_app(config, {NAME: create_namespace(config)})), store


async def listing_of(client: TestClient) -> dict[str, Any]:
    response = await client.get(MODELS, headers=bearer())
    assert response.status == 200, await response.text()
    body: dict[str, Any] = orjson.loads(await response.read())
    return body


async def test_the_demo_store_is_listed_and_every_model_is_accepted(real: tuple[TestClient, Path]) -> None:
    client, _ = real
    listing = await listing_of(client)
    by_name = {model["name"]: model for model in listing["models"]}
    assert listing["default_model"] == "htdemucs" and list(by_name)[:2] == ["htdemucs", "htdemucs_ft"]
    for name in ("htdemucs", "htdemucs_ft"):
        assert by_name[name]["sources"] == ["drums", "bass", "other", "vocals"] and by_name[name]["kind"] == "demucs"
    assert list(by_name)[2:] == ["2track_vocal", "2track_acc", "bs_4track_vocal", "bs_4track_acc"]
    assert listing["output"]["formats"] == ["wav", "flac", "mp3", "aac", "m4a"]
    asked: list[tuple[str | None, list[str] | None]] = [(None, None)]
    for model in listing["models"]:
        stems = model["stems"]  # each source, then each `no_<source>`: the last pair is one source (a specialist)
        asked += [(model["name"], None), (model["name"], stems[:2]),
                  (model["name"], [stems[-1], stems[len(stems) // 2 - 1]])]
    for name, stems in asked:
        body = {"input": NOT_AUDIO, **({"model": name} if name else {}), **({"stems": stems} if stems else {})}
        response = await client.post("/api/v1/jobs", json=body, headers=bearer())
        assert response.status == 201, (body, await response.text())
        job = await response.json()
        expected = by_name[name or listing["default_model"]]
        assert job["model"] == expected["name"] and job["stems"] == (stems or expected["default_stems"])


async def test_a_model_whose_layer_is_deleted_disappears(real: tuple[TestClient, Path]) -> None:
    client, store = real
    before = [model["name"] for model in (await listing_of(client))["models"]]
    assert "htdemucs_ft" in before
    next(store.glob("f7e0c4bc-*.th")).unlink()  # htdemucs_ft's drums specialist
    after = await listing_of(client)
    assert [model["name"] for model in after["models"]] == [name for name in before if name != "htdemucs_ft"]
    refused = await client.post("/api/v1/jobs", json={"input": NOT_AUDIO, "model": "htdemucs_ft"}, headers=bearer())
    await error_of(refused, 400, 40000022)  # as listed: it cannot run
    next(store.glob("955717e8-*.th")).unlink()  # htdemucs, the default, and what bs_4track_* run
    gone = await listing_of(client)
    assert gone["default_model"] is None
    assert [model["name"] for model in gone["models"]] == ["2track_vocal", "2track_acc"]


@pytest.mark.parametrize("text", ["", "a sentence, not a bag\n"])
async def test_a_yaml_file_that_is_no_bag_is_left_out_not_a_500(real: tuple[TestClient, Path], text: str) -> None:
    client, store = real
    before = [model["name"] for model in (await listing_of(client))["models"]]
    (store / "x.yaml").write_text(text)
    assert [model["name"] for model in (await listing_of(client))["models"]] == before
    refused = await client.post("/api/v1/jobs", json={"input": NOT_AUDIO, "model": "x"}, headers=bearer())
    body = await error_of(refused, 400, 40000022)
    assert "x.yaml is not a bag file" in body["error"]["message"]
    assert (await client.get(MODELS, headers=bearer())).status == 200
