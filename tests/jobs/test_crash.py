"""SIGKILL the gateway while jobs are queued, processing and awaiting webhook delivery; start it
again: every job ends with correct results, every webhook is delivered once, no partial file is served."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import soundfile as sf

from ..conftest import APPKEY, ROOT, free_port, gateway_env, issue_token, wait_healthy, wav_bytes

WEBHOOK_SECRET = "crash-test-webhook-secret"
JOBS = 4


@dataclass
class Hooks:
    """What the webhook receiver saw; it answers 500 until `accepting`."""

    accepting: bool = False
    attempts: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)  # event ids answered 2xx
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, str]]:
    seen = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            event = self.headers["Sami-Event-Id"]
            with seen.lock:
                seen.attempts.append(event)
                if seen.accepting:
                    seen.delivered.append(event)
            self.send_response(204 if seen.accepting else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield seen, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def start(model_store: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = gateway_env(model_store, port, SAMI_DATA_DIR=str(data), SAMI_JOB_WORKERS="1",
                      SAMI_WEBHOOK_SECRET=WEBHOOK_SECRET, SAMI_FETCH_ALLOW="127.0.0.1",
                      SAMI_WEBHOOK_RETRY_DELAYS="0.5", PYTHONPATH=str(ROOT))
    with open(log, "ab") as handle:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env,
                                   stdout=handle, stderr=handle)
    wait_healthy(f"http://127.0.0.1:{port}", process)
    return process


def jobs_of(url: str, headers: dict[str, str], ids: list[str]) -> list[dict[str, Any]]:
    return [requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=10).json() for job_id in ids]


def wait_for(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.timeout(600)
def test_sigkill_loses_nothing(model_store: Path, tmp_path: Path, hooks: tuple[Hooks, str]) -> None:
    seen, hook_url = hooks
    port, data, log = free_port(), tmp_path / "data", tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": "Bearer " + issue_token(APPKEY)}
    process = start(model_store, data, port, log)
    song = wav_bytes(20.0)
    try:
        ids = []
        for n in range(JOBS):
            response = requests.post(f"{url}/api/v1/jobs", headers=headers, timeout=30, files={
                "file": ("song.wav", song, "audio/wav"),
                "params": (None, f'{{"model": "htdemucs", "stems": ["vocals", "no_vocals"], "name": "{n}", '
                                 f'"webhook_url": "{hook_url}"}}')})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        # Kill at once when one snapshot shows a job ended (its webhook refused so far), one running and
        # one still queued; a second look would race the worker, which may finish a job in between.
        def mixed() -> bool:
            states = [j["status"] for j in jobs_of(url, headers, ids)]
            return bool(seen.attempts) and "succeeded" in states and "processing" in states and "queued" in states

        wait_for(mixed, 300)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # What a crash mid-write leaves: a half-written temporary file and an orphan result folder.
        (data / "tmp" / "part-left-by-a-crash").write_bytes(b"half")
        (data / "blobs" / "results" / "job_orphan").mkdir(parents=True)
        (data / "blobs" / "results" / "job_orphan" / "vocals.wav").write_bytes(b"half")
        seen.accepting = True
        process = start(model_store, data, port, log)
        wait_for(lambda: all(j["status"] in ("succeeded", "failed", "cancelled")
                             for j in jobs_of(url, headers, ids)), 420)
        final = jobs_of(url, headers, ids)
        assert [j["status"] for j in final] == ["succeeded"] * JOBS, [j.get("error") for j in final]
        for job in final:
            for stem in ("vocals", "no_vocals"):
                body = requests.get(f"{url}/api/v1/jobs/{job['id']}/results/{stem}", headers=headers,
                                    timeout=30).content
                assert hashlib.sha256(body).hexdigest() == job["result"][stem]["sha256"]
                assert len(body) == job["result"][stem]["size"]
                assert sf.info(io.BytesIO(body)).frames == 20 * 44100
        wait_for(lambda: len(set(seen.delivered)) == JOBS, 60)
        time.sleep(2)  # room for a duplicate, were one coming
        assert sorted(seen.delivered) == sorted(set(seen.delivered)), "an event was delivered twice"
        assert not (data / "tmp" / "part-left-by-a-crash").exists()
        assert not (data / "blobs" / "results" / "job_orphan").exists()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        if os.environ.get("SAMI_TEST_SHOW_LOGS"):
            print(log.read_text())
