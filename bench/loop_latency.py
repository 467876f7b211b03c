"""Does the gateway's event loop stall while it takes in big bodies? Baseline and current tree, one run.

Four 9-minute stereo WAVs (44.1 kHz, 16-bit, 95 MB each, 127 MB of base64) arrive at once on a
gateway whose admission bound is 4 (SAMI_MAX_JOBS=4, tiny demo models, 2track_vocal, mono wav out).
Meanwhile, each from its own process:

- a poller GETs /healthz every 10 ms over one keep-alive connection, for the whole scenario;
- a refuser, once /readyz shows the 4 admitted (the bound is full), sends a small valid invoke
  every 50 ms on a new connection until the first big answer's headers come back; each should be refused
  at once (HTTP 503, status_code 50300001).

Targets: /healthz max <= 50 ms, every refusal <= 100 ms. Per tree it reports the /healthz max, p99
and median and the samples over 50 ms, the refusals' max and median and any other answer, the 4
big answers and their wall time, the gateway's peak RSS (VmHWM) in the scenario, and, from a
separate gateway, the peak RSS of ONE such request alone minus the idle RSS after startup.

Each tree's gateway runs with cwd and PYTHONPATH set to that tree, so it imports that tree's code
(checked before the run); the baseline is a temporary `git worktree` of --baseline, removed after.
With --repeat N the trees are interleaved (each first in every other repeat) and the table quotes
medians; every raw figure goes to the JSON (default bench/results/loop-latency.json) with the
machine, versions and revisions.

    python3 bench/loop_latency.py --baseline REV [--tree PATH] [--repeat 3]    # full run
    python3 bench/loop_latency.py --baseline HEAD --quick                      # 1-minute smoke check
    python3 bench/loop_latency.py --baseline HEAD --baseline-env SAMI_RETAIN_FREED_MEMORY=false --repeat 3
                                                            # one tree, one setting changed

--baseline-env NAME=VALUE (repeatable) sets a variable in the baseline gateway's environment only, so
the two rows can differ by a setting rather than by code. Besides the worst sample, each run counts
the /healthz samples over 20 ms: stalls that a single worst sample, one in about 9,000, reports noisily.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import hashlib
import http.client
import io
import json
import multiprocessing
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
RATE = 44100
APPKEY = "looplatency"
SECRET = "loop-latency-secret-0123456789abcdef0123"
NAMESPACE = "MusicSourceSeparate"
MODEL = "2track_vocal"
MAX_JOBS = 4
HEALTHZ_PERIOD_S = 0.010
REFUSAL_PERIOD_S = 0.050
HEALTHZ_TARGET_MS = 50.0
STALL_MS = 20.0  # a /healthz sample over this counts as a stall of the loop (its median is about 1 ms)
REFUSAL_TARGET_MS = 100.0
OVERLOADED = (503, 50300001)
OK = (200, 20000000)
# The gateway frees a request's slot when its handler returns, a moment before the answer's headers
# reach the client: a small invoke sent in that moment is admitted. Sent up to this long before the
# first big answer's headers arrived, a 200 counts as "admitted as a slot freed", not as a wrong answer.
SLOT_RACE_S = 1.0


# -- inputs ---------------------------------------------------------------------------------------

def wav_bytes(seconds: float, channels: int = 2, seed: int = 0) -> bytes:
    """Tones plus noise as a 16-bit 44.1 kHz WAV, written 10 s at a time to keep memory flat."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", RATE, channels, "PCM_16", format="WAV") as out:
        for start in range(0, frames, 10 * RATE):
            t = np.arange(start, min(frames, start + 10 * RATE)) / RATE
            tone = 0.25 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 331 * t + 1.0)
            block = np.stack([tone, 0.8 * tone][:channels], axis=1) + 0.05 * rng.standard_normal((t.size, channels))
            out.write(block.astype(np.float32))
    return buffer.getvalue()


def invoke_body(data_b64: bytes, token: str) -> bytes:
    """SAMI's invoke envelope with everything in the JSON body, `data` spliced in without a copy of json."""
    head = orjson.dumps({"appkey": APPKEY, "token": token, "namespace": NAMESPACE,
                         "payload": json.dumps({"model": MODEL})})
    return head[:-1] + b',"data":"' + data_b64 + b'"}'


@dataclass(frozen=True)
class Inputs:
    seconds: float
    wav_bytes: int
    big_b64: bytes
    small_b64: bytes


def build_inputs(seconds: float) -> Inputs:
    import base64

    big = wav_bytes(seconds)
    return Inputs(seconds, len(big), base64.b64encode(big), base64.b64encode(wav_bytes(0.5, channels=1, seed=1)))


# -- trees and gateways ---------------------------------------------------------------------------

def tree_env(tree: Path, **extra: str) -> dict[str, str]:
    """The environment that makes Python import `tree`'s packages, not the installed editable one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}
    return {**env, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def check_imports(tree: Path) -> dict[str, str]:
    """Where a process started like the gateway imports its packages from; they must be under `tree`."""
    code = ("import sami_gateway, namespaces.music_source_separate as m, json; "
            "print(json.dumps({'sami_gateway': sami_gateway.__file__, 'namespace': m.__file__}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=tree_env(tree), check=True,
                         capture_output=True, text=True, timeout=120).stdout
    where: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    for path in where.values():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"a gateway started in {tree} would import {path}")
    # Recorded relative to the tree: where the tree lies on this machine says nothing of the result.
    return {name: str(Path(path).resolve().relative_to(tree.resolve())) for name, path in where.items()}


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, text=True).stdout.strip()


def revision(tree: Path) -> dict[str, Any]:
    """The commit a tree is at and whether (and how) its files differ from it."""
    diff = subprocess.run(["git", "-C", str(tree), "diff", "HEAD"], capture_output=True).stdout
    untracked = git(tree, "ls-files", "--others", "--exclude-standard", "--", "sami_gateway", "namespaces")
    return {"commit": git(tree, "rev-parse", "HEAD"),
            "subject": git(tree, "log", "-1", "--format=%s"),
            "uncommitted_changes": bool(diff or untracked),
            "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None,
            "untracked_code": untracked.splitlines()}


@contextlib.contextmanager
def worktree(rev: str, parent: Path) -> Iterator[Path]:
    """A detached worktree of `rev` for the baseline, removed however the run ends."""
    path = parent / "baseline"
    git(ROOT, "worktree", "add", "--detach", str(path), rev)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


def die_with_parent() -> None:
    """Runs in the gateway's child: SIGTERM it if this benchmark dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """`python3 -m sami_gateway serve` from `tree` on a free loopback port, bound of MAX_JOBS requests."""

    def __init__(self, tree: Path, store: Path, log: Path, settings: dict[str, str]) -> None:
        self.port = free_port()
        self.tree = tree
        self.env = tree_env(tree, SAMI_HOST="127.0.0.1", SAMI_PORT=str(self.port), SAMI_MODEL_DIR=str(store),
                            SAMI_APPKEYS=APPKEY, SAMI_TOKEN_SECRET=SECRET, SAMI_LOG_LEVEL="WARNING",
                            SAMI_MAX_JOBS=str(MAX_JOBS), SAMI_REQUEST_TIMEOUT="3600", SAMI_BODY_TIMEOUT="600",
                            # Only the request bound may refuse: the audio-seconds bound and the
                            # appkey's quota (one key sends everything here) are set out of reach.
                            SAMI_MAX_QUEUED_SECONDS="100000", SAMI_QUOTA_RATE="100000",
                            SAMI_QUOTA_BURST="100000", SAMI_QUOTA_CONCURRENT="100000", SAMI_SHUTDOWN_GRACE="5",
                            # Its own data folder and no stem cache: every run separates the song,
                            # whatever ran before it (one tree's stems must not answer the other's).
                            SAMI_DATA_DIR=str(log.parent / f"data-{self.port}"), SAMI_STEM_CACHE_BYTES="0", **settings)
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "sami_gateway", "serve"], cwd=tree, env=self.env,
                                        stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway in {self.tree} exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            with contextlib.suppress(OSError, http.client.HTTPException):
                if get(self.port, "/readyz", 2.0)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the gateway in {self.tree} was not ready within {timeout:g} s:\n" + self.log_tail())

    def log_tail(self) -> str:
        """The end of the gateway's output (its file goes with the temporary directory)."""
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def token(self) -> str:
        """A token made by the tree's own command, whatever its token format."""
        out = subprocess.run([sys.executable, "-m", "sami_gateway", "token", "--appkey", APPKEY], cwd=self.tree,
                             env=self.env, check=True, capture_output=True, text=True, timeout=120).stdout
        return out.split()[-1]

    def memory_mib(self, field: str) -> float:
        """VmHWM (peak) or VmRSS (now) of the gateway process, in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError(f"no {field} for the gateway")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()
        return self.process.returncode


@contextlib.contextmanager
def gateway(tree: Path, store: Path, log: Path, settings: dict[str, str]) -> Iterator[Gateway]:
    running = Gateway(tree, store, log, settings)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


# -- HTTP, from plain sockets ---------------------------------------------------------------------

def get(port: int, path: str, timeout: float, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def post_invoke(conn: http.client.HTTPConnection, body: bytes,
                on_headers: Callable[[], None] = lambda: None) -> tuple[int, int]:
    """HTTP status and SAMI status_code of one invoke (0 for a reply that is not the envelope)."""
    conn.request("POST", "/api/v1/invoke", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    on_headers()
    reply = response.read()
    try:
        code = int(orjson.loads(reply).get("status_code", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        code = 0
    return response.status, code


def remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def paced(period: float, deadline: float, stop: Any) -> Iterator[float]:
    """Send times every `period` s (no catching up after a slow one) until `stop` is set or the deadline."""
    due = time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        yield time.monotonic()
        due = max(due + period, time.monotonic())


# -- the two sampling processes ---------------------------------------------------------------------

def poll_healthz(port: int, ready: Any, stop: Any, deadline: float, out: str) -> None:
    """Poller process: GET /healthz every 10 ms on a keep-alive connection; (time, ms, ok) per request."""
    times, ms, ok = [], [], []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline))
    ready.set()
    for sent in paced(HEALTHZ_PERIOD_S, deadline, stop):
        try:
            good = get(port, "/healthz", remaining(deadline), conn)[0] == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline))
            good = False
        times.append(sent)
        ms.append((time.monotonic() - sent) * 1000)
        ok.append(good)
    Path(out).write_bytes(orjson.dumps({"t": times, "ms": ms, "ok": ok}))


def wait_full(port: int, stop: Any, deadline: float) -> float | None:
    """When /readyz first counts MAX_JOBS admitted requests; None if that never happens before `stop`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline))
    for _ in paced(HEALTHZ_PERIOD_S, deadline, stop):
        with contextlib.suppress(OSError, http.client.HTTPException, orjson.JSONDecodeError, AttributeError):
            if orjson.loads(get(port, "/readyz", remaining(deadline), conn)[1]).get("requests", 0) >= MAX_JOBS:
                return time.monotonic()
            continue
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline))
    return None


def refuse(port: int, body: bytes, ready: Any, stop: Any, deadline: float, out: str) -> None:
    """Refuser process: once the bound is full, a small invoke every 50 ms, each on a new connection."""
    ready.set()
    full = wait_full(port, stop, deadline)
    times, ms, status, code = [], [], [], []
    for sent in paced(REFUSAL_PERIOD_S, deadline, stop) if full is not None else ():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline))
        try:
            answer = post_invoke(conn, body)
        except (OSError, http.client.HTTPException):
            answer = (0, 0)
        finally:
            conn.close()
        times.append(sent)
        ms.append((time.monotonic() - sent) * 1000)
        status.append(answer[0])
        code.append(answer[1])
    Path(out).write_bytes(orjson.dumps({"full_at": full, "t": times, "ms": ms, "http": status, "code": code}))


@contextlib.contextmanager
def samplers(port: int, small: bytes, work: Path, deadline: float) -> Iterator[tuple[Any, Any]]:
    """Start the poller and the refuser and wait until both run; yield (stop_refusing, stop_polling)."""
    ctx = multiprocessing.get_context("spawn")
    stop_refusing, stop_polling = ctx.Event(), ctx.Event()
    ready = [ctx.Event(), ctx.Event()]
    children = [ctx.Process(target=poll_healthz, args=(port, ready[0], stop_polling, deadline,
                                                       str(work / "healthz.json")), daemon=True),
                ctx.Process(target=refuse, args=(port, small, ready[1], stop_refusing, deadline,
                                                 str(work / "refusals.json")), daemon=True)]
    try:
        for child in children:
            child.start()
        for event in ready:
            if not event.wait(60):
                raise RuntimeError("a sampling process did not start")
        time.sleep(0.5)  # a few idle /healthz samples before the burst
        yield stop_refusing, stop_polling
    finally:
        stop_refusing.set()
        stop_polling.set()
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
                child.join()


# -- the scenario -----------------------------------------------------------------------------------

def send_big(conn: http.client.HTTPConnection, body: bytes, barrier: threading.Barrier,
             on_headers: Callable[[], None]) -> dict[str, Any]:
    """One big request on its own connection, sent when all four are connected."""
    try:
        conn.connect()
        barrier.wait(timeout=60)
        started = time.monotonic()
        try:
            http_status, code = post_invoke(conn, body, on_headers)
        except (OSError, http.client.HTTPException) as exc:
            http_status, code = 0, 0
            print(f"big request failed: {exc!r}", file=sys.stderr)
        return {"http": http_status, "status_code": code, "start": started, "end": time.monotonic()}
    finally:
        conn.close()
        on_headers()  # no-op if the headers came; else the refuser stops for a failed request too


def burst(port: int, body: bytes, count: int, deadline: float, on_headers: Callable[[], None]
          ) -> list[dict[str, Any]]:
    """`count` big requests at once; if this is interrupted (SIGTERM, an error), their sockets are shut
    so the threads end now rather than when the gateway answers."""
    barrier = threading.Barrier(count)
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=remaining(deadline)) for _ in range(count)]
    pool = ThreadPoolExecutor(count)
    try:
        futures = [pool.submit(send_big, conn, body, barrier, on_headers) for conn in conns]
        return [future.result(timeout=remaining(deadline)) for future in futures]  # TimeoutError past it
    finally:
        barrier.abort()
        for conn in conns:
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        pool.shutdown(cancel_futures=True)


def ms_stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"max_ms": None, "p99_ms": None, "median_ms": None}
    return {"max_ms": round(max(values), 1), "p99_ms": round(float(np.percentile(values, 99)), 1),
            "median_ms": round(statistics.median(values), 1)}


def healthz_figures(raw: dict[str, Any], origin: float) -> dict[str, Any]:
    ms = raw["ms"]
    return {**ms_stats(ms), "samples": len(ms), f"over_{HEALTHZ_TARGET_MS:g}ms": sum(v > HEALTHZ_TARGET_MS for v in ms),
            f"over_{STALL_MS:g}ms": sum(v > STALL_MS for v in ms),
            "failed": sum(not ok for ok in raw["ok"]),
            "raw": {"t_s": [round(t - origin, 4) for t in raw["t"]], "ms": [round(v, 2) for v in ms]}}


def refusal_figures(raw: dict[str, Any], origin: float, first_answer: float) -> dict[str, Any]:
    """Refusals sent while the bound was full (before the first big answer's headers); latency
    figures leave out the few admitted in the slot race (SLOT_RACE_S), which are counted apart."""
    answers: dict[str, int] = {}
    kept, raced = [], 0
    for i, sent in enumerate(raw["t"]):
        if sent >= first_answer:
            continue
        answer = (raw["http"][i], raw["code"][i])
        answers[f"{answer[0]}/{answer[1]}"] = answers.get(f"{answer[0]}/{answer[1]}", 0) + 1
        if answer == OK and sent > first_answer - SLOT_RACE_S:
            raced += 1
        else:
            kept.append(i)
    ms = [raw["ms"][i] for i in kept]
    stats = ms_stats(ms)
    del stats["p99_ms"]
    return {**stats, "count": len(kept),
            "refused_50300001": sum((raw["http"][i], raw["code"][i]) == OVERLOADED for i in kept),
            "other_answers": sum((raw["http"][i], raw["code"][i]) != OVERLOADED for i in kept),
            "admitted_as_slot_freed": raced,
            "answers": answers, f"over_{REFUSAL_TARGET_MS:g}ms": sum(v > REFUSAL_TARGET_MS for v in ms),
            "bound_full_after_s": None if raw["full_at"] is None else round(raw["full_at"] - origin, 3),
            "sent_after_first_answer": sum(t >= first_answer for t in raw["t"]),
            "raw": {"t_s": [round(t - origin, 4) for t in raw["t"]], "ms": [round(v, 2) for v in raw["ms"]],
                    "http": raw["http"], "code": raw["code"]}}


def scenario(tree: Path, settings: dict[str, str], store: Path, inputs: Inputs, work: Path,
             limit: float) -> dict[str, Any]:
    """Four big requests at once under the poller and the refuser; the figures of one run."""
    work.mkdir(parents=True)
    with gateway(tree, store, work / "gateway.log", settings) as gw:
        token = gw.token()
        big, small = invoke_body(inputs.big_b64, token), invoke_body(inputs.small_b64, token)
        deadline = time.monotonic() + limit
        with samplers(gw.port, small, work, deadline) as (stop_refusing, stop_polling):
            answered: list[float] = []

            def one_answered() -> None:  # a big answer's headers: the bound has room again, refusals stop
                if not stop_refusing.is_set():
                    answered.append(time.monotonic())
                    stop_refusing.set()

            origin = time.monotonic()
            bigs = burst(gw.port, big, MAX_JOBS, deadline, one_answered)
            stop_polling.set()
        peak = gw.memory_mib("VmHWM")
        alive = gw.process.poll() is None
    healthz = orjson.loads((work / "healthz.json").read_bytes())
    refusals = orjson.loads((work / "refusals.json").read_bytes())
    return {"healthz": healthz_figures(healthz, origin), "refusals": refusal_figures(refusals, origin, min(answered)),
            "big": {"http": [b["http"] for b in bigs], "status_code": [b["status_code"] for b in bigs],
                    "all_ok": all((b["http"], b["status_code"]) == (200, 20000000) for b in bigs),
                    "wall_s": round(max(b["end"] for b in bigs) - origin, 2),
                    "each_s": [round(b["end"] - b["start"], 2) for b in bigs],
                    "first_answer_s": round(min(answered) - origin, 2)},
            "gateway_peak_rss_mib": peak, "gateway_alive_after": alive}


def one_request_rss(tree: Path, settings: dict[str, str], store: Path, inputs: Inputs, work: Path,
                    limit: float) -> dict[str, Any]:
    """A fresh gateway, its idle RSS after startup, then the peak while it answers one big request."""
    work.mkdir(parents=True)
    with gateway(tree, store, work / "gateway.log", settings) as gw:
        body = invoke_body(inputs.big_b64, gw.token())
        time.sleep(2.0)
        idle = gw.memory_mib("VmRSS")
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=limit)
        try:
            answer = post_invoke(conn, body)
        finally:
            conn.close()
        wall = time.monotonic() - started
        peak = gw.memory_mib("VmHWM")
    return {"idle_rss_mib": idle, "peak_rss_mib": peak, "peak_minus_idle_mib": round(peak - idle, 1),
            "http": answer[0], "status_code": answer[1], "wall_s": round(wall, 2)}


# -- the report -------------------------------------------------------------------------------------

def median_of(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        if value is not None:
            values.append(value)
    return round(statistics.median(values), 2) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    row = {
        "healthz_max_ms": median_of(runs, "scenario", "healthz", "max_ms"),
        "healthz_p99_ms": median_of(runs, "scenario", "healthz", "p99_ms"),
        "healthz_median_ms": median_of(runs, "scenario", "healthz", "median_ms"),
        "healthz_over_50ms": median_of(runs, "scenario", "healthz", "over_50ms"),
        "healthz_over_20ms": median_of(runs, "scenario", "healthz", "over_20ms"),
        "refusal_max_ms": median_of(runs, "scenario", "refusals", "max_ms"),
        "refusal_median_ms": median_of(runs, "scenario", "refusals", "median_ms"),
        "refusals": median_of(runs, "scenario", "refusals", "count"),
        "other_answers": sum(run["scenario"]["refusals"]["other_answers"] for run in runs),
        "big_all_ok": all(run["scenario"]["big"]["all_ok"] for run in runs),
        "big_wall_s": median_of(runs, "scenario", "big", "wall_s"),
        "peak_rss_mib": median_of(runs, "scenario", "gateway_peak_rss_mib"),
        "one_request_rss_mib": median_of(runs, "one_request", "peak_minus_idle_mib"),
        "runs": len(runs),
    }
    worst_healthz = max((r["scenario"]["healthz"]["max_ms"] or 0.0) for r in runs)
    refusal_maxes = [r["scenario"]["refusals"]["max_ms"] for r in runs]
    row["meets_targets"] = bool(worst_healthz <= HEALTHZ_TARGET_MS and None not in refusal_maxes
                                and max(refusal_maxes) <= REFUSAL_TARGET_MS and row["other_answers"] == 0
                                and row["big_all_ok"])
    return row


COLUMNS = (("healthz max ms", "healthz_max_ms"), ("p99", "healthz_p99_ms"), ("median", "healthz_median_ms"),
           (">50 ms", "healthz_over_50ms"), (">20 ms", "healthz_over_20ms"), ("refusal max ms", "refusal_max_ms"),
           ("median", "refusal_median_ms"), ("refusals", "refusals"), ("other answers", "other_answers"),
           ("4 big ok", "big_all_ok"), ("4 big wall s", "big_wall_s"), ("peak RSS MiB", "peak_rss_mib"),
           ("1 request RSS MiB", "one_request_rss_mib"), ("targets met", "meets_targets"))


def table(rows: dict[str, dict[str, Any]], revisions: dict[str, dict[str, Any]],
          settings: dict[str, dict[str, str]]) -> str:
    lines = ["| tree | " + " | ".join(title for title, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        rev = revisions[name]["commit"][:10] + ("+changes" if revisions[name]["uncommitted_changes"] else "")
        rev += "".join(f", {key}={value}" for key, value in settings.get(name, {}).items())
        lines.append(f"| {name} ({rev}) | " + " | ".join(str(row[key]) for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return float("nan")


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("aiohttp", "orjson", "torch", "numpy", "uvloop")} | {
        "python": platform.python_version()}


def dumps(result: dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (the raw samples run to thousands)."""
    text = json.dumps(result, indent=2)
    return re.sub(r"\[\n\s+([^\[\]{}\"]*?)\n\s*\]",
                  lambda m: "[" + ", ".join(item.strip() for item in m.group(1).split(",")) + "]", text) + "\n"


# -- the run ----------------------------------------------------------------------------------------

def write_store(tree: Path, store: Path) -> None:
    """One tiny demo store (seed 0), from the current tree's own command, shared by both trees."""
    subprocess.run([sys.executable, "-m", "namespaces.music_source_separate.demo_store", str(store)], cwd=tree,
                   env=tree_env(tree), check=True, capture_output=True, timeout=300)


def measure(trees: dict[str, Path], settings: dict[str, dict[str, str]], args: argparse.Namespace,
            work: Path) -> dict[str, list[dict[str, Any]]]:
    store = work / "store"
    write_store(trees["current"], store)
    seconds = 60.0 if args.quick else args.seconds
    inputs = build_inputs(seconds)
    print(f"input: {seconds:g} s stereo, {inputs.wav_bytes / 1e6:.1f} MB wav, "
          f"{len(inputs.big_b64) / 1e6:.1f} MB base64", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for repeat in range(args.repeat):  # interleaved, so drift hits both trees alike
        for name, tree in in_turn(trees, repeat):
            here = work / f"{name}-{repeat}"
            print(f"[{repeat + 1}/{args.repeat}] {name}: 4 at once", flush=True)
            run = {"scenario": scenario(tree, settings[name], store, inputs, here / "scenario", args.limit)}
            print(f"[{repeat + 1}/{args.repeat}] {name}: one request alone", flush=True)
            run["one_request"] = one_request_rss(tree, settings[name], store, inputs, here / "one", args.limit)
            runs[name].append(run)
    return runs


def in_turn(trees: dict[str, Path], repeat: int) -> list[tuple[str, Path]]:
    """The trees in the order of this repeat: each goes first in every other one, so that whatever
    the first or the second run of a pair meets (the machine settling, the memory the other left
    behind) does not fall on one tree only."""
    order = list(trees.items())
    return order if repeat % 2 == 0 else order[::-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loop-latency-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        trees = {"current": args.tree.resolve()}
        if args.baseline:
            trees = {"baseline": stack.enter_context(worktree(args.baseline, work)), **trees}
        imports = {name: check_imports(tree) for name, tree in trees.items()}
        revisions = {name: revision(tree) for name, tree in trees.items()}
        if args.baseline:
            revisions["baseline"]["requested"] = args.baseline
        settings = {name: {} for name in trees} | {"baseline": dict(args.baseline_env)}
        runs = measure(trees, settings, args, work)
    rows = {name: summarize(tree_runs) for name, tree_runs in runs.items()}
    return {
        "benchmark": "loop_latency", "quick": args.quick, "input_seconds": 60.0 if args.quick else args.seconds,
        "input": "stereo 44.1 kHz 16-bit WAV of tones and noise, base64 in the JSON body",
        "model": f"{MODEL} on tiny demo models, mono wav out", "max_jobs": MAX_JOBS, "repeat": args.repeat,
        "targets": {"healthz_max_ms": HEALTHZ_TARGET_MS, "refusal_max_ms": REFUSAL_TARGET_MS,
                    "refusal": list(OVERLOADED)},
        "rows": rows, "table": table(rows, revisions, settings), "revisions": revisions, "imports": imports,
        "baseline_env": dict(args.baseline_env),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "memory_gib": memory_gib(),
                    "platform": platform.platform()},
        "versions": versions(), "elapsed_s": round(time.monotonic() - started, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "runs": runs,
    }


def setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree of the current gateway")
    parser.add_argument("--baseline", help="git revision to compare with, run from a temporary worktree")
    parser.add_argument("--baseline-env", type=setting, action="append", default=[], metavar="NAME=VALUE",
                        help="a variable set in the baseline gateway's environment only (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree, interleaved; the table quotes medians")
    parser.add_argument("--seconds", type=float, default=540.0, help="input length (9 minutes: 95 MB of wav)")
    parser.add_argument("--quick", action="store_true", help="1-minute inputs, a smoke check")
    parser.add_argument("--limit", type=float, default=None, help="hard deadline of one scenario, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/loop-latency.json")
    args = parser.parse_args()
    if args.baseline_env and not args.baseline:
        parser.error("--baseline-env needs --baseline")
    args.limit = args.limit or (300.0 if args.quick else 1800.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup runs on SIGTERM too
    result = run(args)
    print(result["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(result))
    print(f"wrote {args.out} in {result['elapsed_s']} s")


if __name__ == "__main__":
    main()
