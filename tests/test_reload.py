"""SIGHUP reloads the configuration: a revoked appkey is refused without a restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port, gateway_env, issue_token, wait_healthy, wav_bytes

SECRET = "reload-secret-0123456789abcdef012345"


def invoke(url: str, appkey: str) -> int:
    import base64

    body = {"appkey": appkey, "token": issue_token(appkey, secret=SECRET), "namespace": "MusicSourceSeparate",
            "data": base64.b64encode(wav_bytes(0.2)).decode()}
    return int(requests.post(url + "/api/v1/invoke", json=body, timeout=60).json()["status_code"])


def test_sighup_revokes_an_appkey_and_keeps_a_bad_file_out(model_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[appkeys.stays]\n[appkeys.goes]\n")
    port = free_port()
    env = gateway_env(model_store, port, SAMI_CONFIG=str(config), SAMI_TOKEN_SECRET=SECRET)
    env.pop("SAMI_APPKEYS")
    with open(tmp_path / "gateway.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        assert invoke(url, "goes") == 20000000
        config.write_text("[appkeys.stays]\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while invoke(url, "goes") != 40200001:
            assert time.monotonic() < deadline, "the revoked appkey is still accepted"
            time.sleep(0.1)
        assert invoke(url, "stays") == 20000000
        config.write_text("this is not toml [")  # a broken file is refused; the running config stays
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert invoke(url, "stays") == 20000000 and process.poll() is None
        assert "reload refused" in (tmp_path / "gateway.log").read_text()
    finally:
        process.terminate()
        process.wait(timeout=60)
