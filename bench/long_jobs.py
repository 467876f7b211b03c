"""Long jobs through a real gateway, separated span by span: for each length, the peak RSS above idle,
the wall time per audio-second and the time from `processing` to the first byte of a stem.

Each length runs in a gateway of its own (`sami-gateway serve`, one job worker, no stem cache, every
job streamed: `SAMI_STREAM_JOBS`, so that a 10-minute job streams as a longer one does), with
the tiny demo models or, for `--released-minutes`, a randomly initialised HTDemucs of the released
size (`bench/separation.py`'s store). The gateway is warmed up with a 30-second job read as it runs
(so that the first buffers of every path are made), its idle RSS read and its peak reset
(`/proc/PID/clear_refs`; the gateway keeps freed memory for reuse, SAMI_RETAIN_FREED_MEMORY); then
one job fetches its `url` input, a 44.1 kHz stereo 16-bit WAV served on loopback, into `vocals` and
`no_vocals` (wav, 44.1 kHz, stereo). `vocals` is
read from `results/vocals` while the job runs; the first byte's time is taken there.

    python3 bench/long_jobs.py [--minutes 10 30 60 120] [--released-minutes 10]
        [--out bench/results/long-jobs.json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loop_latency import die_with_parent, free_port, tree_env  # noqa: E402
from bench.separation import environment, versions, write_store  # noqa: E402
from bench.stream_memory import write_song  # noqa: E402

APPKEY, SECRET = "bench", "long-jobs-bench-secret-0123456789abcdef"
OUTPUT = {"format": "wav", "sample_rate": 44100, "channels": 2}
STEMS = ["vocals", "no_vocals"]
WARM_SECONDS = 30  # the warm-up job: long enough that its stems are published in parts and read


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A plain HTTP server of `folder` on loopback."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Gateway:
    def __init__(self, store: Path, work: Path, max_seconds: float) -> None:
        self.port = free_port()
        self.env = tree_env(ROOT, SAMI_HOST="127.0.0.1", SAMI_PORT=str(self.port), SAMI_MODEL_DIR=str(store),
                            SAMI_APPKEYS=APPKEY, SAMI_TOKEN_SECRET=SECRET, SAMI_LOG_LEVEL="WARNING",
                            SAMI_DATA_DIR=str(work / "data"), SAMI_STEM_CACHE_BYTES="0", SAMI_JOB_WORKERS="1",
                            SAMI_FETCH_ALLOW="127.0.0.1", SAMI_STREAM_JOBS="true",
                            SAMI_MODEL_MAP="2track_vocal=htdemucs,2track_acc=htdemucs",  # the store's one model
                            SAMI_MAX_JOB_SECONDS=str(max_seconds + 60),
                            SAMI_MAX_JOB_INPUT_BYTES=str(3 * 2**30), SAMI_JOB_TIMEOUT=str(20 * max_seconds + 3600))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], cwd=ROOT, env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        token = subprocess.run([sys.executable, "-m", "sami_gateway", "token", "--appkey", APPKEY], cwd=ROOT,
                               env=self.env, check=True, capture_output=True, text=True, timeout=120).stdout
        self.headers = {"Authorization": "Bearer " + token.split()[-1]}
        deadline = time.monotonic() + 300
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start: " + (work / "gateway.log").read_text()[-2000:])
            time.sleep(0.2)

    def _ready(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(self.url + "/readyz", timeout=2).status_code == 200
        return False

    def memory_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM back to VmRSS

    def submit(self, url: str) -> str:
        body = {"input": {"url": url}, "model": "htdemucs", "stems": STEMS, "output": OUTPUT}
        answer = requests.post(self.url + "/api/v1/jobs", json=body, headers=self.headers, timeout=60)
        answer.raise_for_status()
        return str(answer.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(f"{self.url}/api/v1/jobs/{job_id}", headers=self.headers,
                                              timeout=60).json()
        return answer

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def read_stem(gateway: Gateway, job_id: str, found: dict[str, float]) -> None:
    """`vocals` read while the job runs: when its first byte came, and how many bytes."""
    with requests.get(f"{gateway.url}/api/v1/jobs/{job_id}/results/vocals", headers=gateway.headers, stream=True,
                      timeout=(10, 3600)) as reading:
        total = 0
        for chunk in reading.iter_content(1 << 20):
            if not total:
                found["first_byte"] = time.monotonic()
            total += len(chunk)
        found["bytes"] = total


def run(minutes: float, store: Path, released: bool) -> dict[str, Any]:
    seconds = minutes * 60
    with tempfile.TemporaryDirectory(prefix="long-jobs-") as name:
        work = Path(name)
        songs = work / "songs"
        songs.mkdir()
        write_song(songs / "warm.wav", WARM_SECONDS / 60)
        write_song(songs / "song.wav", minutes)
        gateway = Gateway(store, work, seconds)
        try:
            with serving(songs) as origin:
                warm = gateway.submit(origin + "/warm.wav")  # read as it runs too: every path's buffers made
                while gateway.job(warm)["status"] == "queued":
                    time.sleep(0.05)
                read_stem(gateway, warm, {})
                while gateway.job(warm)["status"] not in ("succeeded", "failed"):
                    time.sleep(0.5)
                idle = gateway.memory_mib("VmRSS")
                gateway.reset_peak()
                job_id = gateway.submit(origin + "/song.wav")
                while (status := gateway.job(job_id)["status"]) == "queued":
                    time.sleep(0.05)
                processing = time.monotonic()
                found: dict[str, float] = {}
                reader = threading.Thread(target=read_stem, args=(gateway, job_id, found), daemon=True)
                reader.start()
                while status not in ("succeeded", "failed", "cancelled"):
                    time.sleep(0.5)
                    status = gateway.job(job_id)["status"]
                done = time.monotonic()
                reader.join(600)
                peak = gateway.memory_mib("VmHWM")
                job = gateway.job(job_id)
        finally:
            gateway.stop()
    if status != "succeeded":
        raise RuntimeError(f"the {minutes:g}-minute job ended {status}: {job.get('error')}")
    wall = done - processing
    row = {"minutes": minutes, "model": "htdemucs, released size, random weights" if released else "tiny demo",
           "idle_rss_mib": round(idle, 1), "peak_above_idle_mib": round(peak - idle, 1),
           "wall_seconds": round(wall, 1), "wall_per_audio_second": round(wall / seconds, 4),
           "first_byte_seconds": round(found["first_byte"] - processing, 2) if "first_byte" in found else None,
           "stem_bytes_read": int(found.get("bytes", 0))}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | minutes | peak RSS above idle | wall per audio-second | processing to first byte |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['minutes']:g} | {row['peak_above_idle_mib']:,.0f} MiB | "
                     f"{row['wall_per_audio_second']:.4f} s | {row['first_byte_seconds']:.1f} s |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Peak RSS above idle and wall time per audio-second against the job's length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, speed) = plt.subplots(1, 2, figsize=(11, 4))
    for model in sorted({row["model"] for row in rows}):
        group = [row for row in rows if row["model"] == model]
        minutes = [row["minutes"] for row in group]
        memory.plot(minutes, [row["peak_above_idle_mib"] for row in group], "o-", label=model)
        speed.plot(minutes, [row["wall_per_audio_second"] for row in group], "o-", label=model)
    memory.set(xlabel="job length, minutes", ylabel="peak RSS above idle, MiB", ylim=(0, None),
               title="Peak RSS above idle")
    speed.set(xlabel="job length, minutes", ylabel="wall seconds per audio-second", ylim=(0, None),
              title="Wall time per audio-second")
    for axes in (memory, speed):
        axes.grid(alpha=0.3)
        axes.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[10, 30, 60, 120])
    parser.add_argument("--released-minutes", type=float, nargs="*", default=[10])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/long-jobs.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="long-jobs-stores-") as name:
        tiny, released = Path(name) / "tiny", Path(name) / "released"
        from namespaces.music_source_separate.demo_store import write_demo_store

        write_demo_store(tiny)
        rows += [run(minutes, tiny, False) for minutes in args.minutes]
        if args.released_minutes:
            released.mkdir()
            write_store(released)
            rows += [run(minutes, released, True) for minutes in args.released_minutes]
    tiny_rows = [row for row in rows if row["model"] == "tiny demo"]
    summary = {}
    if len(tiny_rows) > 1:
        shortest, longest = tiny_rows[0], tiny_rows[-1]
        per_second = [row["wall_per_audio_second"] for row in tiny_rows]
        summary = {"peak_ratio_longest_to_shortest": round(longest["peak_above_idle_mib"]
                                                           / shortest["peak_above_idle_mib"], 3),
                   "wall_per_audio_second_spread": round(max(per_second) / min(per_second) - 1, 3)}
    result = {"benchmark": "long_jobs", "command": "python3 bench/long_jobs.py " + " ".join(sys.argv[1:]),
              **environment(versions()), "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(table(rows))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
