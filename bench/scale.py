"""Scale-out on one machine: the queue hop's cost, throughput with 1 and 2 workers, and recovery.

Real processes on loopback: `redis-server`, SeaweedFS's `weed mini` (S3), fronts and workers
(`sami-gateway serve` with SAMI_QUEUE_URL / `sami-gateway worker`) with the tiny demo models of
the test suite and one torch thread each. Three measurements, each against a baseline of the
same run:

- hop: sequential 10 s stereo invokes through a front and one worker, against the same invokes
  on the single process (SQLite and local files), interleaved; the difference of the medians is
  what the queue adds. Every song is new to both (the stem cache is off). With --baseline REV,
  that revision's single process and front (from a temporary worktree, on a Redis of its own)
  take the same invokes in the same rounds, and the result gives both trees' figures and ratios.
- throughput: the same batch of jobs (three appkeys) run by one worker, then by two; jobs per
  minute and the ratio (close to 2 when two cores are free).
- recovery: two workers, a batch of jobs, one worker SIGKILLed while it holds one; how long until
  another worker took its work over (the lease, SAMI_WORK_LEASE, plus one reclaim round) and
  until every job had succeeded.

    python3 bench/scale.py [--invokes 15] [--jobs 12] [--lease 5] [--baseline REV] [--out bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loop_latency import revision, worktree  # noqa: E402
from tests.cluster.stack import Role, Stack  # noqa: E402
from tests.jobs.live import song  # noqa: E402
from tests.servers import Server, free_port, redis_server, s3_server  # noqa: E402

SECRET = "scale-bench-secret-0123456789abcdef0123"
APPKEYS = ("bench-a", "bench-b", "bench-c")


def base_env(store: Path, tree: Path = ROOT) -> dict[str, str]:
    """The settings of every process, importing the gateway from `tree`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    env.update({"SAMI_HOST": "127.0.0.1", "SAMI_MODEL_DIR": str(store), "SAMI_APPKEYS": ",".join(APPKEYS),
                "SAMI_TOKEN_SECRET": SECRET, "SAMI_THREADS": "1", "SAMI_JOB_WORKERS": "1",
                "SAMI_STEM_CACHE_BYTES": "0", "SAMI_QUOTA_RATE": "1000", "SAMI_QUOTA_BURST": "1000",
                "SAMI_LOG_LEVEL": "WARNING", "SAMI_MAX_AUDIO_SECONDS": "600", "PYTHONPATH": str(tree)})
    return env


def token(appkey: str) -> str:
    from sami_gateway.auth.authenticator import TokenService

    return TokenService(SECRET, "k1").issue(appkey, 3600)


def invoke(url: str, appkey: str, data: bytes) -> float:
    body = {"appkey": appkey, "token": token(appkey), "namespace": "MusicSourceSeparate",
            "data": base64.b64encode(data).decode(), "payload": json.dumps({"model": "2track_vocal"})}
    started = time.perf_counter()
    answer = requests.post(url + "/api/v1/invoke", json=body, timeout=600)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(answer.text)
    return elapsed


def invoke_latencies(urls: list[str], count: int) -> list[list[float]]:
    """`count` sequential invokes to each URL, interleaved (each song sent to every URL in turn), so
    that the machine's drift falls on all of them alike."""
    for url in urls:
        invoke(url, APPKEYS[0], song(10.0, 999, 44100, 2))  # warm-up
    latencies: list[list[float]] = [[] for _ in urls]
    for n in range(count):
        data = song(10.0, n, 44100, 2)
        for url, into in zip(urls, latencies, strict=True):
            into.append(invoke(url, APPKEYS[0], data))
    return latencies


def single_process(store: Path, folder: Path, tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**base_env(store, tree), "SAMI_PORT": str(port), "SAMI_DATA_DIR": str(folder / "single")}
    log = open(folder / "single.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError((folder / "single.log").read_text())


def submit_jobs(front: Role, count: int, seconds: float, seed: int) -> list[tuple[str, str]]:
    jobs = []
    for n in range(count):
        appkey = APPKEYS[n % len(APPKEYS)]
        answer = requests.post(front.url + "/api/v1/jobs", timeout=60,
                               headers={"Authorization": f"Bearer {token(appkey)}"},
                               json={"input": {"data": base64.b64encode(song(seconds, seed + n, 44100, 2)).decode()},
                                     "stems": ["vocals"], "output": {"format": "wav"}})
        if answer.status_code != 201:
            raise RuntimeError(answer.text)
        jobs.append((answer.json()["id"], appkey))
    return jobs


def wait_all(front: Role, jobs: list[tuple[str, str]], timeout: float = 1800) -> float:
    """Until every job has succeeded; when the last one finished (monotonic)."""
    pending = dict(jobs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id, appkey in list(pending.items()):
            job = requests.get(f"{front.url}/api/v1/jobs/{job_id}", timeout=30,
                               headers={"Authorization": f"Bearer {token(appkey)}"}).json()
            if job["status"] == "succeeded":
                pending.pop(job_id)
            elif job["status"] in ("failed", "cancelled"):
                raise RuntimeError(f"job {job_id}: {job}")
        time.sleep(0.1)
    if pending:
        raise RuntimeError(f"{len(pending)} jobs did not finish")
    return time.monotonic()


def throughput(redis: Server, s3: Server, store: Path, folder: Path, workers: int, count: int) -> dict[str, Any]:
    stack = Stack(redis, s3, base_env(store), folder / f"throughput-{workers}")
    try:
        front = stack.front()
        started_workers = [stack.worker() for _ in range(workers)]
        stack.wait_healthy(front, *started_workers)
        stack.wait_ready(front)
        warm = submit_jobs(front, workers, 5.0, seed=5000)  # each worker's first run loads its kernels
        wait_all(front, warm)
        started = time.monotonic()
        jobs = submit_jobs(front, count, 20.0, seed=1000 * workers)
        elapsed = wait_all(front, jobs) - started
    finally:
        stack.stop()
    return {"workers": workers, "jobs": count, "seconds_of_audio_each": 20.0, "wall_seconds": round(elapsed, 2),
            "jobs_per_minute": round(count / elapsed * 60, 2)}


def holding(worker: Role) -> int:
    try:
        return int(requests.get(worker.url + "/healthz", timeout=5).json()["holding"]["batch"])
    except requests.RequestException:
        return 0


def takeovers(worker: Role) -> float:
    text = requests.get(worker.url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sami_gateway_lease_takeovers_total{"))


def recovery(redis: Server, s3: Server, store: Path, folder: Path, lease: float, count: int) -> dict[str, Any]:
    stack = Stack(redis, s3, base_env(store), folder / "recovery", extra={"SAMI_WORK_LEASE": str(lease)})
    try:
        front = stack.front()
        victim, survivor = stack.worker(), stack.worker()
        stack.wait_healthy(front, victim, survivor)
        stack.wait_ready(front)
        jobs = submit_jobs(front, count, 30.0, seed=7000)
        while holding(victim) == 0:
            time.sleep(0.05)
        time.sleep(1.0)  # well into its run
        killed = time.monotonic()
        victim.kill()
        while takeovers(survivor) < 1:
            time.sleep(0.05)
        taken_over = time.monotonic() - killed
        done = wait_all(front, jobs) - killed
    finally:
        stack.stop()
    return {"lease_seconds": lease, "jobs": count, "seconds_of_audio_each": 30.0,
            "takeover_seconds_after_kill": round(taken_over, 2), "all_succeeded_seconds_after_kill": round(done, 2)}


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=60)


def hop_figures(count: int, single: list[float], queued: list[float]) -> dict[str, Any]:
    """What the queue adds to an invoke: the same songs on the single process and through a front."""
    return {"invokes": count, "seconds_of_audio": 10.0,
            "single_process_median_s": round(statistics.median(single), 4),
            "through_queue_median_s": round(statistics.median(queued), 4),
            "added_median_ms": round((statistics.median(queued) - statistics.median(single)) * 1000, 1),
            "added_paired_median_ms": round(statistics.median(q - s for s, q in zip(single, queued, strict=True))
                                            * 1000, 1),
            "single_process_s": [round(x, 4) for x in single], "through_queue_s": [round(x, 4) for x in queued]}


def versions() -> dict[str, str]:
    import aiohttp
    import redis
    import torch

    weed = subprocess.run(["weed", "version"], capture_output=True, text=True).stdout.strip()
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "torch": torch.__version__, "aiohttp": aiohttp.__version__,
            "redis-py": redis.__version__, "redis-server": server, "seaweedfs": weed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invokes", type=int, default=15, help="sequential 10 s invokes per setup")
    parser.add_argument("--jobs", type=int, default=12, help="20 s jobs per throughput run")
    parser.add_argument("--lease", type=float, default=5.0, help="SAMI_WORK_LEASE for the recovery run")
    parser.add_argument("--baseline", help="git revision whose single process and front take the same invokes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    args = parser.parse_args()
    from namespaces.music_source_separate.demo_store import write_demo_store

    folder = Path(tempfile.mkdtemp(prefix="sami-scale-"))
    store = folder / "store"
    store.mkdir()
    write_demo_store(store)
    with contextlib.ExitStack() as resources:
        redis, s3 = resources.enter_context(redis_server()), resources.enter_context(s3_server())
        trees = {"current": ROOT}
        if args.baseline:
            trees["baseline"] = resources.enter_context(worktree(args.baseline, folder))
        urls: dict[str, list[str]] = {}
        for name, tree in trees.items():  # a Redis per tree: their queues must not meet
            own_redis = redis if name == "current" else resources.enter_context(redis_server())
            process, url = single_process(store, folder / name, tree)
            resources.callback(stop_process, process)
            stack = Stack(own_redis, s3, base_env(store, tree), folder / name / "hop")
            resources.callback(stack.stop)
            front, worker = stack.front(), stack.worker()
            stack.wait_healthy(front, worker)
            stack.wait_ready(front)
            urls[name] = [url, front.url]
        latencies = invoke_latencies([url for pair in urls.values() for url in pair], args.invokes)
        hops = {name: hop_figures(args.invokes, *latencies[2 * n:2 * n + 2]) for n, name in enumerate(trees)}
        revisions = {name: revision(tree) for name, tree in trees.items()}
    with redis_server() as redis, s3_server() as s3:
        one = throughput(redis, s3, store, folder, 1, args.jobs)
        two = throughput(redis, s3, store, folder, 2, args.jobs)
        recovered = recovery(redis, s3, store, folder, args.lease, 6)
    hop = hops["current"]
    if args.baseline:
        base = hops["baseline"]
        hop = {**hop, "baseline": base, "ratios_to_baseline": {
            key: round(hop[key] / base[key], 3) if base[key] else None
            for key in ("single_process_median_s", "through_queue_median_s", "added_median_ms",
                        "added_paired_median_ms")}}
    result = {
        "benchmark": "bench/scale.py", "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "processor": platform.machine()},
        "versions": versions(), "revisions": revisions,
        "models": "tiny demo models of the test suite, one torch thread per process",
        "queue_hop": hop, "throughput": {"one_worker": one, "two_workers": two,
                                         "ratio": round(two["jobs_per_minute"] / one["jobs_per_minute"], 2)},
        "recovery": recovered,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "versions")}, indent=2))


if __name__ == "__main__":
    main()
