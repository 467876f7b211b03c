"""Redis's memory under large invokes in scale-out: what to size it for, per invoke in flight.

Real processes on loopback: `redis-server` (AOF, as the README recommends), `weed mini`, one
front and one worker (`SAMI_MAX_INPUT_BYTES` at its default, 100 MB) with the tiny demo models,
one torch thread. Inputs of just under `--mb` MB are sent through the front, first one alone (the
baseline of the same run), then `--invokes` at once; a thread samples Redis's `INFO memory` and
its process's RSS every 10 ms. For each phase: the peak of `used_memory` (Redis's own
`used_memory_peak`, and the highest sample) and of RSS (VmHWM, reset before the phase), less
their value before it, divided by the bytes of input in flight; and what `used_memory` was made
of at its highest sample. That ratio, times the concurrent invokes times `SAMI_MAX_INPUT_BYTES`,
is what Redis needs on top of its idle footprint.

The inputs are WAV of 64-bit samples at 96 kHz (50 MB is 33 s of audio), so that a run takes a
minute or two; Redis holds bytes, whatever they encode. The default is 50 MB: on a loaded 2-core
machine four inputs of 100 MB at once can outlast the Redis client's 3 s timeout (the worker's
read of an input, the front's answer 503), which ends the run.

    python3 bench/redis_memory.py [--invokes 4] [--mb 50] [--out bench/results/redis-memory.json]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import redis as redis_py
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scale import APPKEYS, base_env, token, versions  # noqa: E402
from tests.cluster.stack import Stack  # noqa: E402
from tests.servers import redis_server, s3_server  # noqa: E402

RATE, CHANNELS, SAMPLE_BYTES = 96_000, 2, 8  # WAV DOUBLE: 1.536 MB per second of audio
SAMPLE_SECONDS = 0.01


def song(size: int, seed: int) -> bytes:
    """A WAV of tones and noise just under `size` bytes; each seed gives other bytes."""
    frames = (size - 4096) // (CHANNELS * SAMPLE_BYTES)
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / RATE
    mono = 0.3 * np.sin(2 * np.pi * (110.0 + seed) * t)
    samples = np.stack([mono + 0.02 * rng.standard_normal(frames) for _ in range(CHANNELS)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="DOUBLE")
    return buffer.getvalue()


def body(data: bytes) -> bytes:
    """An invoke's JSON, built once: the client's own encoding is not what is measured."""
    return json.dumps({"appkey": APPKEYS[0], "token": token(APPKEYS[0]), "namespace": "MusicSourceSeparate",
                       "data": base64.b64encode(data).decode(),
                       "payload": json.dumps({"model": "2track_vocal"})}).encode()


def invoke(url: str, encoded: bytes) -> float:
    started = time.perf_counter()
    answer = requests.post(url + "/api/v1/invoke", data=encoded, timeout=900,
                           headers={"Content-Type": "application/json"})
    if answer.status_code != 200:
        raise RuntimeError(answer.text[:500])
    return time.perf_counter() - started


PARTS = ("used_memory_dataset", "mem_clients_normal", "mem_aof_buffer", "used_memory_vm_eval")


class Sampler:
    """Samples Redis's used_memory and its process's RSS until stopped: the highest of each, what
    used_memory was made of at its highest, and the highest of each part on its own."""

    def __init__(self, url: str, pid: int) -> None:
        self._client = redis_py.Redis.from_url(url)
        self._pid = pid
        self._stop = threading.Event()
        self.used_max = 0
        self.rss_max = 0
        self.at_peak: dict[str, int] = {}
        self.part_max = dict.fromkeys(PARTS, 0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def status(self, field: str) -> int:
        """A `VmRSS`/`VmHWM` line of the Redis process, in bytes."""
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def memory(self) -> dict[str, Any]:
        return self._client.info("memory")  # type: ignore[no-any-return]

    def _run(self) -> None:
        while not self._stop.is_set():
            memory = self.memory()
            if int(memory["used_memory"]) > self.used_max:
                self.used_max = int(memory["used_memory"])
                self.at_peak = {part: int(memory[part]) for part in PARTS}
            for part in PARTS:
                self.part_max[part] = max(self.part_max[part], int(memory[part]))
            self.rss_max = max(self.rss_max, self.status("VmRSS"))
            time.sleep(SAMPLE_SECONDS)

    def __enter__(self) -> Sampler:
        Path(f"/proc/{self._pid}/clear_refs").write_text("5")  # VmHWM from here
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def phase(url: str, redis_url: str, pid: int, inputs: list[bytes]) -> dict[str, Any]:
    """`inputs` sent at once; Redis's memory above its value before, per byte of input in flight."""
    encoded = [body(data) for data in inputs]
    idle = redis_py.Redis.from_url(redis_url)
    idle.config_resetstat()
    idle.execute_command("MEMORY", "PURGE")
    before = idle.info("memory")
    started = time.monotonic()
    with Sampler(redis_url, pid) as sampler, ThreadPoolExecutor(len(inputs)) as pool:
        rss_before = sampler.status("VmRSS")
        latencies = list(pool.map(lambda one: invoke(url, one), encoded))
        wall = time.monotonic() - started
        time.sleep(0.5)
        after = idle.info("memory")
        hwm = sampler.status("VmHWM")
    in_flight = sum(len(data) for data in inputs)
    used_peak = max(int(after["used_memory_peak"]), sampler.used_max) - int(before["used_memory"])
    rss_peak = max(hwm, sampler.rss_max) - rss_before
    return {"invokes": len(inputs), "input_bytes_each": len(inputs[0]), "wall_seconds": round(wall, 2),
            "invoke_seconds": [round(x, 2) for x in latencies],
            "used_memory_before": int(before["used_memory"]), "used_memory_peak_above": used_peak,
            "used_memory_sampled_max_above": sampler.used_max - int(before["used_memory"]),
            "rss_before": rss_before, "rss_peak_above": rss_peak,
            "used_memory_factor": round(used_peak / in_flight, 3), "rss_factor": round(rss_peak / in_flight, 3),
            "sampled_parts_at_peak": sampler.at_peak, "sampled_parts_max": sampler.part_max,
            "used_memory_after": int(after["used_memory"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invokes", type=int, default=4, help="invokes sent at once in the second phase")
    parser.add_argument("--mb", type=float, default=50.0, help="size of each input in MB (10^6 bytes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/redis-memory.json")
    args = parser.parse_args()
    from namespaces.music_source_separate.demo_store import write_demo_store

    folder = Path(tempfile.mkdtemp(prefix="sami-redis-memory-"))
    store = folder / "store"
    store.mkdir()
    write_demo_store(store)
    size = int(args.mb * 1e6)
    with redis_server() as redis, s3_server() as s3:
        stack = Stack(redis, s3, base_env(store), folder / "stack")
        try:
            front, worker = stack.front(), stack.worker()
            stack.wait_healthy(front, worker)
            stack.wait_ready(front)
            invoke(front.url, body(song(2_000_000, 999)))  # warm-up: the worker loads its model
            alone = phase(front.url, redis.url, redis.process.pid, [song(size, 0)])
            together = phase(front.url, redis.url, redis.process.pid,
                             [song(size, 1 + n) for n in range(args.invokes)])
        finally:
            stack.stop()
    result = {
        "benchmark": "bench/redis_memory.py", "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "processor": platform.machine()},
        "versions": versions(), "models": "tiny demo models of the test suite",
        "input": f"WAV, {CHANNELS} channels of 64-bit samples at {RATE} Hz, sent as base64 in the invoke JSON",
        "one_invoke": alone, "concurrent_invokes": together,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "versions")}, indent=2))


if __name__ == "__main__":
    main()
