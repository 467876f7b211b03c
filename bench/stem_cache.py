"""The stem cache through invoke: `2track_vocal` then `2track_acc` on the same song.

A gateway on loopback serves a randomly initialised HTDemucs with the released `htdemucs`
hyper-parameters (as `bench/separation.py`; weights cannot be downloaded here, and the time a
separation takes does not depend on training), mapped to both SAMI models. For each of
`--repeats` different songs of `--seconds`, the first call separates and fills the cache; the
second is encoded from it. Medians of the two latencies and their ratio are reported.

    python3 bench/stem_cache.py [--seconds 180] [--repeats 3] [--out bench/results/stem-cache.json]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import RATE, cpu_name, music, versions, write_store  # noqa: E402

SECRET = "stem-cache-bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SAMI_HOST": "127.0.0.1", "SAMI_PORT": str(port), "SAMI_MODEL_DIR": str(work / "store"),
           "SAMI_MODEL_MAP": "2track_vocal=htdemucs,2track_acc=htdemucs,bs_4track_vocal=htdemucs,"
                             "bs_4track_acc=htdemucs",
           "SAMI_APPKEYS": "bench", "SAMI_TOKEN_SECRET": SECRET, "SAMI_DATA_DIR": str(work / "data"),
           "SAMI_LOG_LEVEL": "WARNING", "SAMI_MAX_AUDIO_SECONDS": "600", "PYTHONPATH": str(ROOT)}
    log = open(work / "gateway.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(6000):
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            raise RuntimeError((work / "gateway.log").read_text())
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


def invoke(url: str, token: str, data: str, model: str) -> tuple[float, dict[str, Any]]:
    body = {"appkey": "bench", "token": token, "namespace": "MusicSourceSeparate", "data": data,
            "payload": json.dumps({"model": model, "extra": {"output_format": "wav", "output_channel": 2}})}
    started = time.perf_counter()
    response = requests.post(url + "/api/v1/invoke", json=body, timeout=1800)
    elapsed = time.perf_counter() - started
    reply = response.json()
    if response.status_code != 200:
        raise RuntimeError(reply)
    return elapsed, json.loads(reply["payload"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stem-cache.json")
    args = parser.parse_args()
    from sami_gateway.auth.authenticator import TokenService

    token = TokenService(SECRET).issue("bench", 3600)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "store").mkdir()
        write_store(work / "store")
        process, url = start(work)
        try:
            for seed in range(args.repeats):
                buffer = io.BytesIO()
                sf.write(buffer, music(args.seconds, seed).T, RATE, format="WAV", subtype="PCM_16")
                data = base64.b64encode(buffer.getvalue()).decode()
                first, first_payload = invoke(url, token, data, "2track_vocal")
                second, second_payload = invoke(url, token, data, "2track_acc")
                runs.append({"song_seed": seed, "vocal_s": round(first, 3), "acc_s": round(second, 3),
                             "vocal_cache_hit": first_payload.get("cache_hit"),
                             "acc_cache_hit": second_payload.get("cache_hit"), "ratio": round(first / second, 1)})
                print(json.dumps(runs[-1]))
        finally:
            process.terminate()
            process.wait(timeout=120)
    vocal = statistics.median(run["vocal_s"] for run in runs)
    acc = statistics.median(run["acc_s"] for run in runs)
    result = {
        "benchmark": "stem_cache", "input_seconds": args.seconds, "repeats": args.repeats,
        "model": "HTDemucs, released htdemucs hyper-parameters, random weights", "output": "wav stereo 44.1 kHz",
        "median_first_call_2track_vocal_s": round(vocal, 3), "median_second_call_2track_acc_s": round(acc, 3),
        "median_speedup": round(vocal / acc, 1), "runs": runs,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()}, "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
