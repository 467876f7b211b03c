"""Load-test harness for any SAMI-compatible URL, with built-in scenarios for this gateway.

Generic run against a URL (N concurrent clients, a mix of clip lengths and models):

    python3 bench/loadtest.py --url http://127.0.0.1:8080 --appkey K --token T \\
        --clients 8 --requests 100 --mix 10:0.8,60:0.2 --models 2track_vocal,2track_acc

Scenarios that start their own gateway on loopback (tiny demo models) and
check the serving claims; each writes JSON and a PNG under bench/results/:

    python3 bench/loadtest.py --scenario fairness|overload|cancel|jobs
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
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIP_RATE = 22050  # mono 22.05 kHz input keeps long clips small on the wire
SECRET = "loadtest-secret-0123456789abcdef0123"


@dataclass
class Record:
    label: str
    http: int
    code: int
    start: float
    end: float

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Samples:
    """What the sampler saw: queue depth over time and /healthz latencies."""

    times: list[float] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    health: list[float] = field(default_factory=list)


def clip_body(seconds: float, model: str, fmt: str = "wav", seed: int | None = None) -> dict[str, str]:
    """A clip as an invoke body; the same `seed` (default: its length) gives the same bytes."""
    t = np.arange(int(seconds * CLIP_RATE)) / CLIP_RATE
    rng = np.random.default_rng(int(seconds) if seed is None else seed)
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, mono.astype(np.float32), CLIP_RATE, format="WAV", subtype="PCM_16")
    return {"data": base64.b64encode(buffer.getvalue()).decode(),
            "payload": json.dumps({"model": model, "extra": {"output_format": fmt}})}


class Client:
    """Sends invoke requests and samples the gateway's health and queue."""

    def __init__(self, url: str, appkey: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.auth = {"appkey": appkey, "token": token, "namespace": "MusicSourceSeparate"}
        self.token = token
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    async def invoke(self, session: aiohttp.ClientSession, body: dict[str, str], label: str,
                     timeout: float = 900) -> Record:
        start = self.now()
        try:
            async with session.post(self.url + "/api/v1/invoke", json={**self.auth, **body},
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                reply = await response.json(content_type=None)
                return Record(label, response.status, int(reply.get("status_code", 0)), start, self.now())
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            return Record(label, 0, 0, start, self.now())

    async def sample(self, session: aiohttp.ClientSession, samples: Samples, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(self.url + "/healthz") as response:
                await response.read()
            samples.health.append(time.monotonic() - started)
            try:
                async with session.get(self.url + "/readyz") as response:
                    depth = (await response.json()).get("requests", 0)
            except (aiohttp.ClientError, json.JSONDecodeError):
                depth = -1
            samples.times.append(self.now())
            samples.depth.append(depth)
            await asyncio.sleep(0.1)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def summary(records: Sequence[Record]) -> dict[str, Any]:
    by_label: dict[str, list[Record]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    out: dict[str, Any] = {}
    for label, group in by_label.items():
        ok = [r.latency for r in group if r.http == 200]
        out[label] = {"requests": len(group), "ok": len(ok),
                      "rejected_503": sum(r.http == 503 for r in group),
                      "other_errors": sum(r.http not in (200, 503) for r in group),
                      **({"p50_s": round(percentile(ok, 50), 3), "p95_s": round(percentile(ok, 95), 3),
                          "p99_s": round(percentile(ok, 99), 3)} if ok else {})}
    return out


def plot(path: Path, records: Sequence[Record], samples: Samples, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for label in sorted({r.label for r in records}):
        group = [r for r in records if r.label == label]
        top.scatter([r.end for r in group], [r.latency for r in group], s=12, label=label,
                    marker="o" if all(r.http == 200 for r in group) else "x")
    top.set_ylabel("latency (s)")
    top.legend(fontsize=8)
    top.set_title(title)
    bottom.step(samples.times, samples.depth, where="post")
    bottom.set_ylabel("admitted requests")
    bottom.set_xlabel("time since start (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SpawnedGateway:
    """`sami-gateway serve` on a free loopback port with the tiny demo models."""

    def __init__(self, work: Path, **settings: str) -> None:
        from namespaces.music_source_separate.demo_store import write_demo_store

        store = work / "store"
        write_demo_store(store)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "SAMI_HOST": "127.0.0.1", "SAMI_PORT": str(port), "SAMI_MODEL_DIR": str(store),
               "SAMI_APPKEYS": "loadtest,second", "SAMI_TOKEN_SECRET": SECRET, "SAMI_LOG_LEVEL": "WARNING",
               "SAMI_DATA_DIR": str(work / "data"), "SAMI_MAX_QUEUED_JOBS_PER_APPKEY": "1000",
               # One appkey stands for every client here: the scenarios measure scheduling,
               # admission and cancellation, not the per-key quota, so it is set out of reach.
               "SAMI_QUOTA_RATE": "1000", "SAMI_QUOTA_BURST": "1000", "SAMI_QUOTA_CONCURRENT": "1000",
               "PYTHONPATH": str(ROOT), **settings}
        self.log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], env=env,
                                        stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings

    def token(self, appkey: str = "loadtest") -> str:
        from sami_gateway.auth import TokenService

        return TokenService(SECRET).issue(appkey, 3600)

    async def wait(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(1200):
                try:
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the gateway did not become ready")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=120)
        self.log.close()
        return code


async def fairness(client: Client, session: aiohttp.ClientSession) -> tuple[list[Record], dict[str, Any]]:
    """10 s clips alone, then while a 5-minute song runs, then twenty of them sent with the song."""
    short, long = clip_body(10, "2track_vocal"), clip_body(300, "2track_vocal")
    idle = [await client.invoke(session, short, "10s idle") for _ in range(5)]
    song = asyncio.create_task(client.invoke(session, long, "300s"))
    await asyncio.sleep(1.0)
    loaded = []
    while not song.done() or len(loaded) < 5:
        loaded.append(await client.invoke(session, short, "10s beside 300s"))
    together_song = asyncio.create_task(client.invoke(session, long, "300s with 20x10s"))
    together = await asyncio.gather(*(client.invoke(session, short, "10s with 300s") for _ in range(20)))
    records = [*idle, await song, *loaded, *together, await together_song]
    idle_median = statistics.median(r.latency for r in idle)
    loaded_p95 = percentile([r.latency for r in loaded], 95)
    last_short = max(r.end for r in together)
    checks = {
        "idle_10s_median_s": round(idle_median, 3), "loaded_10s_p95_s": round(loaded_p95, 3),
        "loaded_p95_over_idle": round(loaded_p95 / idle_median, 2),
        "together_all_ok": all(r.http == 200 for r in [*together, records[-1]]),
        "shorts_before_long": last_short < records[-1].end,
        "last_short_s": round(last_short - records[-1].start, 2),
        "long_s": round(records[-1].latency, 2),
    }
    return records, checks


async def overload(client: Client, session: aiohttp.ClientSession, bound: int
                   ) -> tuple[list[Record], dict[str, Any]]:
    """Four times the admission bound of 30 s clips, all at once."""
    body = clip_body(30, "bs_4track_acc")
    records = list(await asyncio.gather(*(client.invoke(session, body, "30s burst") for _ in range(4 * bound))))
    refused = [r for r in records if r.http == 503]
    checks = {
        "offered": len(records), "admitted_ok": sum(r.http == 200 for r in records),
        "refused_503": len(refused),
        "refused_codes": sorted({r.code for r in refused}),
        "slowest_refusal_ms": round(max((r.latency for r in refused), default=0) * 1000, 1),
        "other_5xx_or_errors": sum(r.http not in (200, 503) for r in records),
    }
    return records, checks


async def cancel(client: Client, session: aiohttp.ClientSession) -> tuple[list[Record], dict[str, Any]]:
    """A client that gives up on a 5-minute song after 2 s: its chunks must stop."""
    record = await client.invoke(session, clip_body(300, "2track_vocal"), "300s abandoned", timeout=2.0)
    gave_up = client.now()
    prefix = 'sami_gateway_jobs_total{outcome="cancelled"}'
    cancelled: list[str] = []
    # The request leaves /readyz's count at once; the worker is free when it has dropped the
    # job, which the scheduler counts as cancelled. Stop looking after 30 s.
    while not cancelled and client.now() - gave_up < 30:
        await asyncio.sleep(0.01)
        async with session.get(client.url + "/metrics") as response:
            cancelled = [line for line in (await response.text()).splitlines() if line.startswith(prefix)]
    freed = client.now() - gave_up
    checks = {"worker_freed_after_s": round(freed, 3) if cancelled else None,
              "metrics_cancelled": cancelled[0] if cancelled else None}
    return [record], checks


async def submit_job(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]) -> str:
    async with session.post(url + "/api/v1/jobs", json=body, headers={"Authorization": "Bearer " + token}) as answer:
        assert answer.status == 201, await answer.text()
        job_id: str = (await answer.json())["id"]
        return job_id


async def statuses(session: aiohttp.ClientSession, url: str, token: str) -> list[dict[str, Any]]:
    """Every job of the token's appkey (newest first)."""
    jobs: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = "?limit=100" + (f"&cursor={cursor}" if cursor else "")
        async with session.get(url + "/api/v1/jobs" + query, headers={"Authorization": "Bearer " + token}) as answer:
            page = await answer.json()
        jobs += page["jobs"]
        if not page["next_cursor"]:
            return jobs
        cursor = page["next_cursor"]


async def jobs(client: Client, session: aiohttp.ClientSession, second_token: str, backlog: int = 50
               ) -> tuple[list[Record], dict[str, Any]]:
    """10 s invokes alone, then while one appkey's `backlog` ten-second jobs run; one job of a second
    appkey submitted after that backlog: it must not wait for it. Every clip is different, so
    that each request separates (none is answered from the stem cache)."""
    seeds = iter(range(1000, 100000))

    def short() -> dict[str, str]:
        return clip_body(10, "2track_vocal", seed=next(seeds))

    def job_body() -> dict[str, Any]:
        return {"input": {"data": clip_body(10, "", seed=next(seeds))["data"]}, "model": "htdemucs",
                "stems": ["vocals", "no_vocals"]}

    idle = [await client.invoke(session, short(), "10s idle") for _ in range(5)]
    started = client.now()
    for _ in range(backlog):
        await submit_job(session, client.url, client.token, job_body())
    single = await submit_job(session, client.url, second_token, job_body())
    loaded: list[Record] = []
    single_done_at, first_done_at_single = None, None
    while True:
        loaded.append(await client.invoke(session, short(), "10s beside jobs"))
        first = await statuses(session, client.url, client.token)
        done = sum(job["status"] in ("succeeded", "failed", "cancelled") for job in first)
        if single_done_at is None:
            mine = [job for job in await statuses(session, client.url, second_token) if job["id"] == single]
            if mine and mine[0]["status"] == "succeeded":
                single_done_at, first_done_at_single = client.now() - started, done
        if done == backlog and single_done_at is not None:
            break
    backlog_s = client.now() - started
    failed = sum(job["status"] != "succeeded" for job in first)
    idle_median = statistics.median(r.latency for r in idle)
    loaded_p95 = percentile([r.latency for r in loaded], 95)
    checks = {
        "idle_10s_median_s": round(idle_median, 3), "beside_jobs_10s_p95_s": round(loaded_p95, 3),
        "beside_jobs_p95_over_idle": round(loaded_p95 / idle_median, 2),
        "invokes_beside_jobs": len(loaded), "invokes_all_ok": all(r.http == 200 for r in [*idle, *loaded]),
        "backlog_jobs": backlog, "backlog_failed": failed, "backlog_s": round(backlog_s, 2),
        "second_appkey_job_done_s": round(single_done_at or 0, 2),
        "backlog_done_when_second_finished": first_done_at_single,
        "second_before_half_backlog": (first_done_at_single or backlog) < backlog / 2,
    }
    return [*idle, *loaded], checks


async def generic(client: Client, session: aiohttp.ClientSession, args: argparse.Namespace
                  ) -> tuple[list[Record], dict[str, Any]]:
    rng = random.Random(args.seed)
    classes = [(float(seconds), float(weight)) for seconds, weight in
               (item.split(":") for item in args.mix.split(","))]
    models, formats = args.models.split(","), args.formats.split(",")
    bodies: dict[tuple[float, str, str], dict[str, str]] = {}
    remaining = [args.requests]

    async def worker() -> list[Record]:
        done = []
        while remaining[0] > 0:
            remaining[0] -= 1
            seconds = rng.choices([c for c, _ in classes], [w for _, w in classes])[0]
            key = (seconds, rng.choice(models), rng.choice(formats))
            if key not in bodies:
                bodies[key] = clip_body(*key)
            done.append(await client.invoke(session, bodies[key], f"{seconds:g}s"))
        return done

    started = client.now()
    results = await asyncio.gather(*(worker() for _ in range(args.clients)))
    records = [r for group in results for r in group]
    elapsed = client.now() - started
    ok = [r for r in records if r.http == 200]
    return records, {"throughput_rps": round(len(ok) / elapsed, 3), "elapsed_s": round(elapsed, 2)}


def machine() -> dict[str, Any]:
    import importlib.metadata as metadata

    return {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": metadata.version("torch"), "aiohttp": metadata.version("aiohttp")}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = None
        if args.scenario:
            settings = {"SAMI_MAX_JOBS": str(args.max_jobs)}
            if args.scenario != "jobs":  # they repeat one clip to measure scheduling, not the stem cache
                settings["SAMI_STEM_CACHE_BYTES"] = "0"
            gateway = SpawnedGateway(Path(tmp), **settings)
            await gateway.wait()
            client = Client(gateway.url, "loadtest", gateway.token())
        else:
            client = Client(args.url, args.appkey, args.token)
        samples, stop = Samples(), asyncio.Event()
        async with aiohttp.ClientSession() as session:
            sampler = asyncio.create_task(client.sample(session, samples, stop))
            if args.scenario == "fairness":
                records, checks = await fairness(client, session)
            elif args.scenario == "overload":
                records, checks = await overload(client, session, args.max_jobs)
            elif args.scenario == "cancel":
                records, checks = await cancel(client, session)
            elif args.scenario == "jobs":
                assert gateway is not None
                records, checks = await jobs(client, session, gateway.token("second"))
            else:
                records, checks = await generic(client, session, args)
            stop.set()
            await sampler
        result: dict[str, Any] = {"scenario": args.scenario or "generic", "checks": checks,
                                  "classes": summary(records),
                                  "healthz_p99_ms": round(percentile(samples.health, 99) * 1000, 1),
                                  "healthz_max_ms": round(max(samples.health, default=0) * 1000, 1)}
        if gateway is not None:
            result["gateway"] = {"settings": gateway.settings, "peak_rss_mib": gateway.peak_rss_mib(),
                                 "exit_code": gateway.stop(), "models": "tiny demo models"}
        result |= {"machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                   "records": [asdict(r) for r in records]}
        if args.plot:
            plot(args.plot, records, samples, f"loadtest: {result['scenario']}")
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("fairness", "overload", "cancel", "jobs"))
    parser.add_argument("--max-jobs", type=int, default=32, help="admission bound of the spawned gateway")
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--appkey", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--mix", default="10:0.8,60:0.2", help="clip seconds:weight,...")
    parser.add_argument("--models", default="2track_vocal")
    parser.add_argument("--formats", default="wav")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    name = args.scenario or "generic"
    args.out = args.out or ROOT / f"bench/results/loadtest-{name}.json"
    args.plot = args.plot or ROOT / f"bench/results/loadtest-{name}.png"
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("records", "machine")}, indent=2))


if __name__ == "__main__":
    main()
