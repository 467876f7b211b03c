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
import contextlib
import datetime
import io
import json
import multiprocessing
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
from bench.loop_latency import cpu_name, in_turn, memory_gib, revision, tree_env, versions, worktree  # noqa: E402

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


def clip_body(seconds: float, model: str, fmt: str = "wav", seed: int | None = None,
              rate: int = CLIP_RATE, channels: int = 1) -> dict[str, str]:
    """A clip as an invoke body; the same `seed` (default: its length) gives the same bytes."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(seconds) if seed is None else seed)
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    samples = np.stack([tone + 0.05 * rng.standard_normal(t.size) for _ in range(channels)], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
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


def plot(path: Path, panels: Sequence[tuple[str, Sequence[Record], Samples]], title: str) -> None:
    """Per panel (a tree's run): latency over time by class above, admitted requests below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(9 * len(panels), 6), sharex="col", squeeze=False)
    for (name, records, samples), top, bottom in zip(panels, axes[0], axes[1], strict=True):
        for label in sorted({r.label for r in records}):
            group = [r for r in records if r.label == label]
            top.scatter([r.end for r in group], [r.latency for r in group], s=12, label=label,
                        marker="o" if all(r.http == 200 for r in group) else "x")
        top.set_ylabel("latency (s)")
        top.legend(fontsize=8)
        top.set_title(f"{title}: {name}" if len(panels) > 1 else title)
        bottom.step(samples.times, samples.depth, where="post")
        bottom.set_ylabel("admitted requests")
        bottom.set_xlabel("time since start (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overload(path: Path, panels: Sequence[tuple[str, Sequence[Record], dict[str, Any]]]) -> None:
    """Per tree: each extra request's latency against when it was sent, over the held bodies' arrival."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), sharey=True, squeeze=False)
    for (name, records, checks), ax in zip(panels, axes[0], strict=True):
        ax.axvspan(checks["held_admitted_then_sent_at_s"], checks["held_bodies_whole_at_s"][0], color="0.9",
                   label=f"{checks['bound']} held bodies arriving")
        for label in sorted({r.label for r in records if not r.label.endswith("held")}):
            group = [r for r in records if r.label == label]
            ax.scatter([r.start for r in group], [r.latency * 1000 for r in group], s=10, label=label, marker="x")
        ax.axhline(REFUSAL_TARGET_MS, color="red", linewidth=0.8, label=f"{REFUSAL_TARGET_MS:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("sent at (s since start)")
        ax.set_title(f"overload: {name}", fontsize=10)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("answered after (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SpawnedGateway:
    """`sami-gateway serve` on a free loopback port with the tiny demo models."""

    def __init__(self, work: Path, tree: Path = ROOT, **settings: str) -> None:
        from namespaces.music_source_separate.demo_store import write_demo_store

        store = work / "store"
        write_demo_store(store)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**tree_env(tree), "SAMI_HOST": "127.0.0.1", "SAMI_PORT": str(port), "SAMI_MODEL_DIR": str(store),
               "SAMI_APPKEYS": "loadtest,second", "SAMI_TOKEN_SECRET": SECRET, "SAMI_LOG_LEVEL": "WARNING",
               "SAMI_DATA_DIR": str(work / "data"), "SAMI_MAX_QUEUED_JOBS_PER_APPKEY": "1000",
               # One appkey stands for every client here: the scenarios measure scheduling,
               # admission and cancellation, not the per-key quota, so it is set out of reach.
               "SAMI_QUOTA_RATE": "1000", "SAMI_QUOTA_BURST": "1000", "SAMI_QUOTA_CONCURRENT": "1000",
               **settings}
        self.log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], cwd=tree, env=env,
                                        stdout=self.log, stderr=self.log)
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings

    def token(self, appkey: str = "loadtest") -> str:
        from sami_gateway.auth.authenticator import TokenService

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


# -- overload: extra requests while the bound is held by bodies still arriving -----------------------

HELD_CLIP_SECONDS = 60  # each admitted request: a 60 s stereo 44.1 kHz WAV, 14.1 MB of base64
EXTRA_CLIP_SECONDS = 1
REFUSAL_TARGET_MS = 100.0  # an extra request past the bound is answered within this, at the 99th percentile


@dataclass(frozen=True)
class Overload:
    """The overload scenario's shape: the bound held by bodies still arriving, then extras alone and in bursts."""

    bound: int
    burst: int  # extras sent at once
    rounds: int  # at most, while the held bodies arrive: `singles` extras one at a time, then a burst
    singles: int = 5
    body_rate: float = 0.0  # bytes a second offered by the held bodies together; 0: as fast as they are taken
    piece_bytes: int = 64 * 1024  # written at a time


@dataclass(frozen=True)
class Holding:
    """Between the scenario and the held requests' process (multiprocessing events): send the bodies
    (their heads are sent at once, so that all are admitted first); a body was sent whole; stop
    pacing; where the records go."""

    go: Any
    one_sent: Any
    finish: Any
    out: Path


def request_head(length: int) -> bytes:
    return (b"POST /api/v1/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, int]:
    """HTTP status and SAMI status_code of one answer (0, 0 for none)."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(":", 1) for line in head[1:] if ":" in line)
        reply = await reader.readexactly(int(fields["content-length"]))
        return int(head[0].split()[1]), int(json.loads(reply).get("status_code", 0))
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, KeyError, ValueError):
        return 0, 0


async def exchange(port: int, body: bytes, label: str, origin: float) -> Record:
    """One invoke on a new connection, from plain sockets (no client library's time in the figure)."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return Record(label, 0, 0, start - origin, time.monotonic() - origin)
    try:
        writer.write(request_head(len(body)) + body)
        http, code = await read_answer(reader)
        return Record(label, http, code, start - origin, time.monotonic() - origin)
    finally:
        writer.close()


async def send_held(port: int, body: bytes, shape: Overload, holding: Holding, origin: float
                    ) -> tuple[Record, float]:
    """One held request: its head, then once `holding.go` is set its body, written a piece at a time
    (at an even pace if `shape.body_rate`, the rest at once when `holding.finish` is set), then its
    answer read; its record and when its last byte was written."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(len(body)))
        while not holding.go.is_set():
            await asyncio.sleep(0.002)
        if shape.body_rate:
            pause, due = shape.bound * shape.piece_bytes / shape.body_rate, time.monotonic()
            for offset in range(0, len(body), shape.piece_bytes):
                if holding.finish.is_set():
                    writer.write(body[offset:])
                    break
                writer.write(body[offset:offset + shape.piece_bytes])
                await writer.drain()
                due += pause
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        else:  # whole: the kernel paces it, and this process stays out of the way of the others
            writer.write(body)
        await writer.drain()
        sent = time.monotonic() - origin
        holding.one_sent.set()
        http, code = await read_answer(reader)
        return Record(f"{HELD_CLIP_SECONDS}s held", http, code, start - origin, time.monotonic() - origin), sent
    finally:
        writer.close()


def hold(port: int, body: bytes, shape: Overload, holding: Holding, origin: float) -> None:
    """The held requests' process: `shape.bound` bodies at once; writes their records to `holding.out`."""
    async def held() -> list[tuple[Record, float]]:
        return list(await asyncio.gather(*(send_held(port, body, shape, holding, origin)
                                           for _ in range(shape.bound))))

    results = asyncio.run(held())
    holding.out.write_text(json.dumps({"records": [asdict(r) for r, _ in results], "sent": [s for _, s in results]}))


def ms_figures(records: Sequence[Record]) -> dict[str, Any]:
    ms = [r.latency * 1000 for r in records]
    return {"count": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms, default=0.0), 1)}


async def wait_admitted(client: Client, session: aiohttp.ClientSession, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(client.url + "/readyz") as response:
            if (await response.json()).get("requests", 0) >= count:
                return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{count} requests were never admitted at once")


async def extras_while_held(client: Client, shape: Overload, holding: Holding, body: bytes) -> list[Record]:
    """Rounds of extra requests, one at a time and then `shape.burst` at once, until a held body
    has arrived whole (or `shape.rounds` rounds)."""
    port = int(client.url.rsplit(":", 1)[1])
    extras: list[Record] = []
    for _ in range(shape.rounds):
        if holding.one_sent.is_set():
            break
        for _ in range(shape.singles):
            extras.append(await exchange(port, body, "extra, one at a time", client.origin))
            await asyncio.sleep(0.02)
        extras += await asyncio.gather(*(exchange(port, body, f"extra, {shape.burst} at once", client.origin)
                                         for _ in range(shape.burst)))
        await asyncio.sleep(0.05)
    return extras


def refusal_checks(extras: Sequence[Record], arrived: float) -> dict[str, Any]:
    """Figures of the extras answered while every held body was still arriving (before `arrived`)."""
    during = [r for r in extras if r.end <= arrived]
    refused = [r for r in during if (r.http, r.code) == (503, 50300001)]
    singles = [r for r in refused if r.label.endswith("one at a time")]
    return {
        "extras": len(extras), "extras_while_arriving": len(during), "refused_503_50300001": len(refused),
        "other_answers": len(during) - len(refused), "refused": ms_figures(refused),
        "one_at_a_time": ms_figures(singles), "in_bursts": ms_figures([r for r in refused if r not in singles]),
        "refused_p99_within_target": percentile([r.latency * 1000 for r in refused], 99) <= REFUSAL_TARGET_MS,
    }


async def overload(client: Client, session: aiohttp.ClientSession, shape: Overload, work: Path
                   ) -> tuple[list[Record], dict[str, Any]]:
    """The bound held by requests whose bodies are still arriving; extra requests one at a time and
    in bursts must be refused at once (503 50300001), and the held ones must still succeed. The held
    requests' heads are sent first; once all are admitted, their bodies and the extras. Only the
    extras answered before a held body had been sent whole are counted."""
    auth = json.dumps(client.auth)[:-1].encode()
    song = clip_body(HELD_CLIP_SECONDS, "2track_vocal", rate=44100, channels=2)
    held_body = auth + b", " + json.dumps(song)[1:].encode()
    extra = auth + b", " + json.dumps(clip_body(EXTRA_CLIP_SECONDS, "2track_vocal"))[1:].encode()
    ctx = multiprocessing.get_context("spawn")
    holding = Holding(ctx.Event(), ctx.Event(), ctx.Event(), work / "held.json")
    port = int(client.url.rsplit(":", 1)[1])
    sender = ctx.Process(target=hold, args=(port, held_body, shape, holding, client.origin), daemon=True)
    sender.start()
    try:
        await wait_admitted(client, session, shape.bound)
        admitted = client.now()
        holding.go.set()
        extras = await extras_while_held(client, shape, holding, extra)
    finally:
        holding.go.set()
        holding.finish.set()
        await asyncio.get_running_loop().run_in_executor(None, sender.join)
    held = json.loads(holding.out.read_text())
    records = [Record(**r) for r in held["records"]]
    checks = {
        "bound": shape.bound, "held_clip_s": HELD_CLIP_SECONDS, "held_body_bytes": len(held_body),
        "held_offered_bytes_per_s": shape.body_rate or "as fast as taken", "piece_bytes": shape.piece_bytes,
        "held_ok": sum(r.http == 200 for r in records), "held_admitted_then_sent_at_s": round(admitted, 3),
        "held_bodies_whole_at_s": [round(min(held["sent"]), 3), round(max(held["sent"]), 3)],
        **refusal_checks(extras, min(held["sent"])),
    }
    return records + extras, checks


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
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "memory_gib": memory_gib(), "platform": platform.platform(),
            "load_average": os.getloadavg(), **versions()}


def settings_for(args: argparse.Namespace) -> dict[str, str]:
    settings = {"SAMI_MAX_JOBS": str(args.max_jobs)}
    if args.scenario != "jobs":  # they repeat one clip to measure scheduling, not the stem cache
        settings["SAMI_STEM_CACHE_BYTES"] = "0"
    if args.scenario == "overload":  # only the request bound refuses, not the audio-seconds one
        settings["SAMI_MAX_QUEUED_SECONDS"] = "100000"
    return settings


async def run_once(args: argparse.Namespace, tree: Path, work: Path) -> dict[str, Any]:
    """One scenario against a gateway started from `tree`, or the generic run against --url."""
    gateway = None
    if args.scenario:
        gateway = SpawnedGateway(work, tree, **settings_for(args))
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
            shape = Overload(args.max_jobs, args.burst, args.rounds, body_rate=args.body_mbps * 1e6)
            records, checks = await overload(client, session, shape, work)
        elif args.scenario == "cancel":
            records, checks = await cancel(client, session)
        elif args.scenario == "jobs":
            assert gateway is not None
            records, checks = await jobs(client, session, gateway.token("second"))
        else:
            records, checks = await generic(client, session, args)
        stop.set()
        await sampler
    result: dict[str, Any] = {"checks": checks, "classes": summary(records),
                              "healthz_p99_ms": round(percentile(samples.health, 99) * 1000, 1),
                              "healthz_max_ms": round(max(samples.health, default=0) * 1000, 1)}
    if gateway is not None:
        result["gateway"] = {"settings": gateway.settings, "peak_rss_mib": gateway.peak_rss_mib(),
                             "exit_code": gateway.stop(), "models": "tiny demo models"}
    return result | {"records": records, "samples": samples}


def median_figure(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for one in runs:
        value: Any = one["checks"]
        for key in path:
            value = value[key]
        values.append(value)
    return round(statistics.median(values), 1)


def overload_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per tree: the median over runs of each refusal figure, and the 99th percentile of all runs'
    refusals answered while the held bodies arrived."""
    refused = [r.latency * 1000 for one in runs for r in one["records"] if (r.http, r.code) == (503, 50300001)
               and r.end <= one["checks"]["held_bodies_whole_at_s"][0]]
    return {**{f"{group}_{figure}": median_figure(runs, group, figure)
               for group in ("refused", "one_at_a_time", "in_bursts") for figure in ("p50_ms", "p99_ms", "max_ms")},
            "all_runs_refused_p99_ms": round(percentile(refused, 99), 1), "all_runs_refusals": len(refused),
            "held_all_ok": all(one["checks"]["held_ok"] == one["checks"]["bound"] for one in runs),
            "other_answers": sum(one["checks"]["other_answers"] for one in runs), "runs": len(runs)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario once per tree (this one, and --baseline's), --repeat times, interleaved."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        trees = {"current": ROOT}
        if args.baseline:
            trees = {"baseline": stack.enter_context(worktree(args.baseline, Path(tmp))), **trees}
        revisions = {name: revision(tree) for name, tree in trees.items()}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for repeat in range(args.repeat):
            for name, tree in in_turn(trees, repeat):
                work = Path(tmp) / f"{name}-{repeat}"
                work.mkdir()
                print(f"[{repeat + 1}/{args.repeat}] {name}", file=sys.stderr, flush=True)
                runs[name].append(await run_once(args, tree, work))
    last = runs["current"][-1]
    result: dict[str, Any] = {"scenario": args.scenario or "generic", "command": " ".join(sys.argv[1:])}
    if args.scenario == "overload":
        result["summary"] = {name: overload_summary(tree_runs) for name, tree_runs in runs.items()}
    result |= {key: value for key, value in last.items() if key not in ("records", "samples")}
    if len(runs) > 1 or args.repeat > 1:
        result["runs"] = {name: [{key: value for key, value in one.items() if key not in ("records", "samples")}
                                 for one in tree_runs] for name, tree_runs in runs.items()}
    result |= {"revisions": revisions, "machine": machine(),
               "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "records": [asdict(r) for r in last["records"]]}
    names = {name: f"{name} ({revisions[name]['commit'][:7]})" for name in runs}
    if args.plot and args.scenario == "overload":
        plot_overload(args.plot, [(names[name], one[-1]["records"], one[-1]["checks"]) for name, one in runs.items()])
    elif args.plot:
        plot(args.plot, [(names[name], one[-1]["records"], one[-1]["samples"]) for name, one in runs.items()],
             f"loadtest: {result['scenario']}")
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
    parser.add_argument("--burst", type=int, default=72, help="overload: extra requests sent at once")
    parser.add_argument("--rounds", type=int, default=20,
                        help="overload: at most this many rounds of 5 extras one at a time, then a burst")
    parser.add_argument("--body-mbps", type=float, default=0.0,
                        help="overload: MB a second the held bodies offer together (0: as fast as taken)")
    parser.add_argument("--baseline", help="git revision whose gateway runs the scenario too, from a worktree")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree, interleaved")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    name = args.scenario or "generic"
    args.out = args.out or ROOT / f"bench/results/loadtest-{name}.json"
    args.plot = args.plot or ROOT / f"bench/results/loadtest-{name}.png"
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("records", "machine", "runs")}, indent=2))


if __name__ == "__main__":
    main()
