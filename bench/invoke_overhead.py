"""What the gateway adds on top of the separation itself, measured in one run.

Baseline: the MusicSourceSeparate pipeline called in-process (decode, separate,
encode). Measured: the same clip through `POST /api/v1/invoke` on a loopback
gateway process (HTTP, JSON, base64, executors). Both use the same tiny models
from a temporary demo store, so the ratio isolates the gateway's overhead.

    python3 bench/invoke_overhead.py [--seconds 10] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret-0123456789abcdef0123456789"


def clip(seconds: float) -> bytes:
    t = np.arange(int(seconds * 44100)) / 44100
    rng = np.random.default_rng(0)
    mix = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((t.size, 2))
    buffer = io.BytesIO()
    sf.write(buffer, mix.astype(np.float32), 44100, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def direct_times(store: Path, data: bytes, repeats: int) -> list[float]:
    """The namespace's own parse and run, in-process, with a scheduler as the gateway gives it."""
    from namespaces.music_source_separate import create_namespace
    from sami_gateway.config import load_config
    from sami_gateway.runtime.namespace import Call
    from sami_gateway.runtime.scheduler import Limits, Scheduler

    # The stem cache off: the same input repeated would otherwise be answered from it.
    config = load_config({}, {"SAMI_MODEL_DIR": str(store), "SAMI_TOKEN_SECRET": SECRET,
                              "SAMI_STEM_CACHE_BYTES": "0", "SAMI_DATA_DIR": str(store.parent / "data")})
    namespace = create_namespace(config)
    scheduler = Scheduler(Limits(config.max_jobs, config.max_queued_seconds), nice=config.worker_nice)

    async def run() -> list[float]:
        scheduler.start()
        await namespace.start(scheduler)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            with scheduler.admission():
                params = namespace.parse({"model": "2track_vocal"})
                await namespace.run(Call("bench", "bench", params, data))
            times.append(time.perf_counter() - started)
        await namespace.stop()
        scheduler.close()
        return times

    return asyncio.run(run())


def gateway_times(store: Path, data: bytes, repeats: int) -> list[float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SAMI_MODEL_DIR": str(store), "SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "bench",
           "SAMI_PORT": str(port), "PYTHONPATH": str(ROOT), "SAMI_LOG_LEVEL": "WARNING",
           "SAMI_STEM_CACHE_BYTES": "0", "SAMI_DATA_DIR": str(store.parent / "data")}
    process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        token = subprocess.run([sys.executable, "-m", "sami_gateway", "token", "--appkey", "bench"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        body = {"appkey": "bench", "token": token, "namespace": "MusicSourceSeparate",
                "data": base64.b64encode(data).decode(), "payload": json.dumps({"model": "2track_vocal"})}
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            reply = requests.post(url + "/api/v1/invoke", json=body, timeout=300)
            times.append(time.perf_counter() - started)
            assert reply.json()["status_code"] == 20000000, reply.text
        return times
    finally:
        process.terminate()
        process.wait(timeout=30)


def versions() -> dict[str, str]:
    import aiohttp
    import demucs
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "aiohttp": aiohttp.__version__,
            "demucs": getattr(demucs, "__version__", "4.1.0")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/invoke_overhead.json")
    args = parser.parse_args()
    from namespaces.music_source_separate.demo_store import write_demo_store

    data = clip(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        write_demo_store(store)
        direct = direct_times(store, data, args.repeats)
        gateway = gateway_times(store, data, args.repeats)
    result = {
        "benchmark": "invoke_overhead", "clip_seconds": args.seconds, "repeats": args.repeats,
        "model": "2track_vocal on tiny demo models",
        "direct_median_s": round(statistics.median(direct), 4),
        "gateway_median_s": round(statistics.median(gateway), 4),
        "gateway_over_direct": round(statistics.median(gateway) / statistics.median(direct), 3),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.machine()},
        "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(f"{'path':<10}{'median s':>10}\n{'direct':<10}{result['direct_median_s']:>10}\n"
          f"{'gateway':<10}{result['gateway_median_s']:>10}\nratio gateway/direct: {result['gateway_over_direct']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
