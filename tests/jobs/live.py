"""A live `sami-gateway serve` with the Jobs API on, for the live tests (raw HTTP and SDK), and a local
HTTP receiver for webhooks and `copy_results_to`.

The gateway runs the real MusicSourceSeparate namespace on the tiny demo model store, with one job
worker, a webhook secret, quick webhook retries, room for a 10-minute song (11.5 minutes for a job that
streams), and two appkeys. It is
started once per test process (`shared_gateway`) and stopped when the session ends.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from sami_gateway.auth.authenticator import TokenService

from ..conftest import APPKEY, ROOT, SECRET, free_port, gateway_env, wait_healthy

WEBHOOK_SECRET = "live-webhook-secret-0123456789"
OTHER_APPKEY = "other-appkey"  # never creates a job: it only looks for the first appkey's
SONG_RATE = 8000  # mono 8 kHz 16-bit: a 10-minute song is 9.6 MB
TEN_MINUTES = 600.0
TERMINAL = ("succeeded", "failed", "cancelled")


def song(seconds: float, seed: int, rate: int = SONG_RATE, channels: int = 1) -> bytes:
    """A WAV (16-bit) of two tones and noise; each seed gives other bytes, so no stem cache hit."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    base = 110.0 + 10.0 * (seed % 37)
    mono = 0.3 * np.sin(2 * np.pi * base * t) + 0.2 * np.sin(2 * np.pi * 3 * base * t)
    samples = np.stack([mono + 0.02 * rng.standard_normal(t.size) for _ in range(channels)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def audio_of(data: bytes) -> tuple[np.ndarray, int]:
    """Decoded (frames, channels) samples and rate."""
    samples, rate = sf.read(io.BytesIO(data), always_2d=True)
    return samples, rate


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@dataclass
class LiveGateway:
    url: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def token(self, appkey: str = APPKEY) -> str:
        return TokenService(SECRET).issue(appkey, 3600)

    def headers(self, appkey: str = APPKEY) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.token(appkey)}

    def metrics(self) -> dict[str, float]:
        response = requests.get(self.url + "/metrics", timeout=10)
        assert response.status_code == 200
        return parse_metrics(response.text)

    def job(self, job_id: str, wait: float = 0, appkey: str = APPKEY) -> requests.Response:
        query = f"?wait={wait:g}" if wait else ""
        return requests.get(f"{self.url}/api/v1/jobs/{job_id}{query}", headers=self.headers(appkey),
                            timeout=wait + 30)

    def finished(self, job_id: str, seconds: float = 120, appkey: str = APPKEY) -> dict[str, Any]:
        """`appkey`'s job once terminal (long polls), failing after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"job {job_id} did not end within {seconds} s: {self.job(job_id, appkey=appkey).json()}"
            response = self.job(job_id, wait=max(1, min(60, int(left))), appkey=appkey)
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] in TERMINAL:
                return job

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def start_gateway(model_store: Path, folder: Path, **extra: str) -> LiveGateway:
    """`sami-gateway serve` with the Jobs API's live-test settings (overridden by `extra`)."""
    port = free_port()
    data_dir, log = folder / "data", folder / "gateway.log"
    env = gateway_env(model_store, port, **{
        "SAMI_DATA_DIR": str(data_dir), "SAMI_APPKEYS": f"{APPKEY},{OTHER_APPKEY}",
        "SAMI_WEBHOOK_SECRET": WEBHOOK_SECRET, "SAMI_FETCH_ALLOW": "127.0.0.1",
        "SAMI_WEBHOOK_RETRY_DELAYS": "0.3,0.3,0.3", "SAMI_MAX_AUDIO_SECONDS": "660",
        "SAMI_MAX_INPUT_BYTES": str(16 * 1024 * 1024), "SAMI_JOB_WORKERS": "1", "PYTHONPATH": str(ROOT),
        # A job may be longer than an invoke when it streams (wav, flac, mp3, aac, m4a or ogg), here to 11.5 minutes.
        "SAMI_MAX_JOB_SECONDS": "690", "SAMI_MAX_JOB_INPUT_BYTES": str(16 * 1024 * 1024),
        # Short songs are cached; a 10-minute song's stems (850 MB) are not: no such files left in /tmp.
        "SAMI_STEM_CACHE_BYTES": str(256 * 1024 * 1024),
        **extra})
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env,
                                   stdout=handle, stderr=handle)
    gateway = LiveGateway(f"http://127.0.0.1:{port}", data_dir, log, process)
    try:
        wait_healthy(gateway.url, process)
    except RuntimeError as exc:
        stop_gateway(gateway)
        raise RuntimeError(f"{exc}; log:\n{gateway.log_tail()}") from exc
    return gateway


def read_while_processing(url: str, headers: dict[str, str], job_id: str, stem: str) -> tuple[bytes, float, str]:
    """`stem` read from the moment its job is processing to its end, through the gateway at `url`: its
    bytes, the seconds from processing to its first MiB, and the job's status then."""
    def status() -> str:
        answer: str = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()["status"]
        return answer
    wait_for(lambda: status() != "queued" or None, 60, f"for {job_id} to start")
    began = time.monotonic()
    with requests.get(f"{url}/api/v1/jobs/{job_id}/results/{stem}", headers=headers, stream=True,
                      timeout=(10, 120)) as reading:
        assert reading.status_code == 200, reading.text
        pieces = reading.iter_content(1024 * 1024)
        first = b""
        while len(first) < 1024 * 1024:
            first += next(pieces)
        first_mib = time.monotonic() - began
        then = status()
        return first + b"".join(pieces), first_mib, then


def stop_gateway(gateway: LiveGateway) -> None:
    if gateway.process.poll() is None:
        gateway.process.terminate()
        try:
            gateway.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.process.kill()
            gateway.process.wait(timeout=30)
    if os.environ.get("SAMI_TEST_SHOW_LOGS"):
        print(gateway.log.read_text(errors="replace"))


_shared: list[LiveGateway] = []


def shared_gateway(request: pytest.FixtureRequest, model_store: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> LiveGateway:
    """The one live gateway of this test process; call it from a session-scoped fixture (the first
    caller's finalizer stops it at the end of the session)."""
    if not _shared or _shared[0].process.poll() is not None:
        gateway = start_gateway(model_store, tmp_path_factory.mktemp("live-gateway"))
        _shared[:] = [gateway]
        request.addfinalizer(lambda: stop_gateway(gateway))
    return _shared[0]


def wait_for(check: Callable[[], Any], seconds: float, message: str = "", interval: float = 0.05) -> Any:
    """`check()`'s first truthy value, polled every `interval`; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {seconds} s {message}"
        time.sleep(interval)
    return value


# -- a local HTTP server that receives webhooks and copies --------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Records every POST and PUT; a path in `failures` is answered 500 that many times first."""

    url: str = ""
    failures: dict[str, int] = field(default_factory=dict)
    seen: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> str:
        return self.url + path

    def received(self, path: str) -> list[Received]:
        with self.lock:
            return [item for item in self.seen if item.path == path]


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(parts)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


@contextmanager
def receiver() -> Iterator[Receiver]:
    seen = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            body = _read_body(self)
            with seen.lock:
                left = seen.failures.get(self.path, 0)
                status = 500 if left > 0 else 200
                if left > 0:
                    seen.failures[self.path] = left - 1
                seen.seen.append(Received(self.command, self.path, dict(self.headers.items()), body, status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _record  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    seen.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def origin(files: dict[str, bytes]) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving `files` by path (for `input.url`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
