"""Shared fixtures: a tiny model store, a secret, and a real gateway process on loopback."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests
import soundfile as sf

from sami_gateway.runtime.scheduler import Limits, Scheduler
from tests.servers import Server, redis_server

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789abcdef0123456789"
APPKEY = "test-appkey"
LIMITED_APPKEY = "limited-appkey"  # allowed on another namespace only
ACCESS_KEY, SECRET_KEY = "AKLTliveGatewayKey", "liveGatewaySecretKey0123"  # GetToken credentials
STARTUP_SECONDS = 120


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built in a test keep their jobs under the test's own folder, not the user's data directory."""
    from sami_gateway.config import jobs as settings

    monkeypatch.setattr(settings, "user_data_dir", lambda environ: tmp_path / "sami-data")


@pytest.fixture(scope="session")
def redis() -> Iterator[Server]:
    """A real redis-server on loopback for the session, started by the first test that asks for it."""
    with redis_server() as server:
        yield server


@pytest.fixture
def make_scheduler() -> Iterator[Callable[[int, float], Scheduler]]:
    """Started schedulers with the given bounds, closed after the test."""
    started: list[Scheduler] = []

    def make(max_jobs: int, max_cost: float) -> Scheduler:
        scheduler = Scheduler(Limits(max_jobs, max_cost))
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield make
    for scheduler in started:
        scheduler.close()


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from namespaces.music_source_separate.demo_store import write_demo_store

    store = tmp_path_factory.mktemp("store")
    write_demo_store(store)
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tone(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A music-like test signal: two tones plus a little noise, (frames, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
    cols = [mono + 0.01 * rng.standard_normal(t.size) for _ in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def wav_bytes(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate, channels), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode_input(fmt: str, seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> bytes:
    """tone() as a client would send it: wav/flac/ogg, raw s16le pcm, mp3, ADTS aac or m4a."""
    samples = tone(seconds, rate, channels)
    if fmt in ("wav", "flac", "ogg"):
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format=fmt.upper())
        return buffer.getvalue()
    if fmt == "pcm":
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    container_format, codec = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"),
                               "m4a": ("ipod", "aac")}[fmt]
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@dataclass(frozen=True)
class Gateway:
    url: str
    appkey: str
    token: str
    process: subprocess.Popen[bytes]

    def invoke(self, body: dict[str, object] | None = None, *, params: dict[str, str] | None = None,
               raw: bytes | None = None, timeout: float = 120) -> requests.Response:
        if raw is not None:
            return requests.post(self.url + "/api/v1/invoke", data=raw, params=params,
                                 headers={"Content-Type": "application/json"}, timeout=timeout)
        return requests.post(self.url + "/api/v1/invoke", json=body, params=params, timeout=timeout)

    def auth(self, **fields: object) -> dict[str, object]:
        return {"appkey": self.appkey, "token": self.token, "namespace": "MusicSourceSeparate", **fields}


def gateway_env(model_store: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update({
        "SAMI_HOST": "127.0.0.1", "SAMI_PORT": str(port), "SAMI_MODEL_DIR": str(model_store),
        "SAMI_APPKEYS": f"{APPKEY},{LIMITED_APPKEY}:SomeOtherNamespace",
        "SAMI_TOKEN_SECRET": SECRET, "SAMI_FETCH_ALLOW": "localhost", "SAMI_THREADS": "2",
        "SAMI_ACCESS_KEYS": f"{ACCESS_KEY}:{SECRET_KEY}:{APPKEY}",
        "SAMI_MAX_INPUT_BYTES": str(8 * 1024 * 1024), "SAMI_MAX_AUDIO_SECONDS": "60",
        "SAMI_DATA_DIR": tempfile.mkdtemp(prefix="sami-data-"), "PYTHONPATH": str(ROOT),
        # Many tests send the same input again: answered from the stem cache, they come faster than
        # the default quota allows. Quotas are tested on their own; here they stay out of reach.
        "SAMI_QUOTA_RATE": "1000", "SAMI_QUOTA_BURST": "1000",
    })
    env.update(extra)
    return env


def issue_token(appkey: str, *extra: str, secret: str = SECRET) -> str:
    env = {**os.environ, "SAMI_TOKEN_SECRET": secret, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "sami_gateway", "token", "--appkey", appkey, *extra],
                         env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}")
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gateway did not become healthy")


@pytest.fixture(scope="session")
def gateway(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """`sami-gateway serve` as a real process, on a free loopback port, for the whole session."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"],
                                   env=gateway_env(model_store, port), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield Gateway(url, APPKEY, issue_token(APPKEY), process)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; log:\n{log_path.read_text()}") from exc
    finally:
        process.terminate()
        process.wait(timeout=30)


ORIGIN_REDIRECTS = {  # path -> where it redirects: public-looking URLs that lead inside
    "/to-loopback": "http://127.0.0.1:{port}/song.wav",
    "/to-metadata": "http://169.254.169.254/latest/meta-data/",
    "/loop": "http://localhost:{port}/loop",
}


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """Builds a Go program folder offline into a binary; one build cache for the session."""
    go = shutil.which("go")
    assert go, "golang-go is required: bash scripts/install.sh --test installs it"
    cache = tmp_path_factory.mktemp("gocache")
    env = {**os.environ, "GOCACHE": str(cache), "GOPATH": str(cache / "path"), "GOFLAGS": "-mod=mod",
           "GOPROXY": "off", "CGO_ENABLED": "0"}

    def build(folder: Path) -> Path:
        out = tmp_path_factory.mktemp("go") / "invoke"
        subprocess.run([go, "build", "-o", str(out), "."], cwd=folder, env=env, check=True, timeout=300)
        return out

    return build


@pytest.fixture(scope="session")
def go_client(go_build: Callable[[Path], Path]) -> Path:
    """The Go sample of examples/go, built."""
    return go_build(ROOT / "examples/go")


@pytest.fixture(scope="session")
def origin() -> Iterator[str]:
    """A plain HTTP server on loopback, reached as `localhost` (which the test gateway allows).

    Serves a WAV, an empty file, one over the test size cap with and without a
    Content-Length, and the redirects of ORIGIN_REDIRECTS.
    """
    big = b"\0" * (9 * 1024 * 1024)
    files = {"/song.wav": wav_bytes(1.0), "/empty.wav": b"", "/big.wav": big}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802
            port = self.server.server_address[1]
            if self.path in ORIGIN_REDIRECTS:
                self.send_response(302)
                self.send_header("Location", ORIGIN_REDIRECTS[self.path].format(port=port))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/big-unannounced":  # no Content-Length: only the streamed count can stop it
                self.send_response(200)
                self.end_headers()
                self.wfile.write(big)
                return
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def live(request: pytest.FixtureRequest, model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The Jobs API's live gateway (tests/jobs/live.py), started once for the session."""
    from tests.jobs.live import shared_gateway

    return shared_gateway(request, model_store, tmp_path_factory)


@pytest.fixture
def hooks() -> Iterator[Any]:
    """A local receiver of webhooks and copies (tests/jobs/live.py)."""
    from tests.jobs.live import receiver

    with receiver() as seen:
        yield seen
