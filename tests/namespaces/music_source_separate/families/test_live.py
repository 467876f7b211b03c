"""End to end: `sami-gateway serve` whose SAMI models are an imported tiny Mel-Band RoFormer (through
SAMI_MODEL_MAP): the official Python and Go samples get its stem, and the Jobs API lists it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import soundfile as sf

from tests.conftest import APPKEY, ROOT, Gateway, free_port, gateway_env, issue_token, wait_healthy, wav_bytes

from .test_serving import MODEL_MAP, family_store  # noqa: F401 - the fixture

CLIP_SECONDS = 1.0


@pytest.fixture(scope="module")
def gateway(family_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:  # noqa: F811
    port = free_port()
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    env = gateway_env(family_store, port, SAMI_MODEL_MAP=MODEL_MAP, SAMI_JOB_MODEL="tiny_mel")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env, stdout=log, stderr=log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        yield Gateway(f"http://127.0.0.1:{port}", APPKEY, issue_token(APPKEY), process)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; log:\n{log_path.read_text()}") from exc
    finally:
        process.terminate()
        process.wait(timeout=30)


def client_env(gateway: Gateway) -> dict[str, str]:
    return {**os.environ, "SAMI_URL": gateway.url, "SAMI_APPKEY": gateway.appkey, "SAMI_TOKEN": gateway.token}


def test_the_python_sample_gets_its_stem(gateway: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(CLIP_SECONDS))
    run = subprocess.run([sys.executable, str(ROOT / "examples/python/invoke.py"), str(source), "2track_vocal"],
                         cwd=tmp_path, env=client_env(gateway), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "status_code=20000000" in run.stdout, run.stdout + run.stderr
    audio, rate = sf.read(tmp_path / "output.wav", always_2d=True)
    assert rate == 44100 and audio.shape == (int(CLIP_SECONDS * 44100), 1) and abs(audio).max() > 0


def test_the_go_sample_gets_its_stem(gateway: Gateway, go_client: Path, tmp_path: Path) -> None:
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(CLIP_SECONDS, rate=48000, channels=1))
    run = subprocess.run([str(go_client), str(source), "2track_acc"], cwd=tmp_path, env=client_env(gateway),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    audio, rate = sf.read(tmp_path / "output.wav", always_2d=True)
    assert rate == 44100 and audio.shape == (int(CLIP_SECONDS * 44100), 1)
    reply = json.loads((tmp_path / "output.json").read_text())
    assert reply["model"] == "2track_acc" and reply["backend_model"] == "tiny_mel:vocals"


def test_the_jobs_api_lists_it_with_its_licence(gateway: Gateway) -> None:
    response = requests.get(gateway.url + "/api/v1/models", headers={"Authorization": "Bearer " + gateway.token},
                            timeout=30)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert listing["default_model"] == "tiny_mel"
    entry = listing["models"][0]
    assert (entry["name"], entry["kind"], entry["family"], entry["licence"]) == \
        ("tiny_mel", "family", "mel_band_roformer", "CC-BY-4.0")
