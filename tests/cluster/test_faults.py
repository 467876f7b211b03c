"""Faults a scale-out deployment meets while jobs and invokes of two appkeys run, with a real front and
worker over a real Redis and SeaweedFS: a receiver answering 1.5 GB or trickling its reply to the
worker, Redis paused, the storage paused. The worker's peak memory stays bounded, both processes
live on, every request gets an answer within a bound, and every job accepted ends `succeeded`.

`SAMI_SOAK_MINUTES=N` adds a soak: the same faults in turn for N minutes under continuous traffic.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis as SyncRedis

from sami_gateway.cluster.redis_quota import held
from tests.conftest import APPKEY, gateway_env, issue_token
from tests.jobs.hostile_receiver import HUGE_REPLY_BYTES, RSS_BOUND_BYTES, memory, replier, reset_peak, warm_up
from tests.jobs.live import SONG_RATE, TERMINAL, WEBHOOK_SECRET, Receiver, parse_metrics, receiver, song, wait_for
from tests.servers import Server

from .stack import Role, Stack

pytestmark = pytest.mark.timeout(300)
OTHER_APPKEY = "other-appkey"
APPKEYS = (APPKEY, OTHER_APPKEY)
SMALL = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}
ONCE_SECONDS = 3.0  # after every webhook arrived, how long a second one of a job is waited for
PAUSE_SECONDS = 13.0  # past the 12 s after which a silent subscription is connected again
ANSWER_BOUND = 30.0  # the longest any request may wait for its answer, through a pause
RECOVERY_BOUND = 60.0  # from the resume to every accepted job ended and the front ready
# Not in a log through these faults: each is logged in a line that says what waits for what, never with
# a traceback (which a handler that did not expect it prints, as for a task nobody awaited).
UNEXPECTED = ("Traceback", "exception was never retrieved")
SOAK_MINUTES = float(os.environ.get("SAMI_SOAK_MINUTES", "0") or 0)
SOAK_COMMAND = "SAMI_SOAK_MINUTES=30 python3 -m pytest tests/cluster/test_faults.py -k soak -s"
SOAK_PAUSES = (10.0, 20.0)  # each pause of the soak lasts between these (seconds), at random
SOAK_WINDOW = 20.0  # the soak's warm-up rounds: this long under traffic, until their peak RSS is steady
SOAK_EVERY = 2.0  # the soak's traffic: a job and an invoke per appkey every 2 s or so (one worker keeps up)


@dataclass
class Cluster:
    """The stack of this module: one front, one worker, a token per appkey."""

    stack: Stack
    front: Role
    worker: Role
    tokens: dict[str, str]

    def headers(self, appkey: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[appkey]}"}

    def submit(self, appkey: str, seed: int, seconds: float = 2.0, timeout: float = ANSWER_BOUND,
               **fields: Any) -> requests.Response:
        body = {"input": {"data": base64.b64encode(song(seconds, seed)).decode()}, "stems": ["vocals"],
                "output": SMALL, **fields}
        return requests.post(self.front.url + "/api/v1/jobs", json=body, headers=self.headers(appkey),
                             timeout=timeout)

    def invoke(self, appkey: str, seed: int, timeout: float = ANSWER_BOUND) -> requests.Response:
        body = {"appkey": appkey, "token": self.tokens[appkey], "namespace": "MusicSourceSeparate",
                "data": base64.b64encode(song(1.0, seed)).decode(), "payload": json.dumps({"model": "2track_vocal"})}
        return requests.post(self.front.url + "/api/v1/invoke", json=body, timeout=timeout)

    def job(self, job_id: str, appkey: str) -> dict[str, Any]:
        answer = requests.get(f"{self.front.url}/api/v1/jobs/{job_id}", headers=self.headers(appkey), timeout=30)
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    def finished(self, job_id: str, appkey: str, seconds: float = 120) -> dict[str, Any]:
        return wait_for(lambda: (job := self.job(job_id, appkey))["status"] in TERMINAL and job, seconds,
                        f"job {job_id} ends", interval=0.2)  # type: ignore[no-any-return]

    def worker_metrics(self) -> dict[str, float]:
        return parse_metrics(requests.get(self.worker.url + "/metrics", timeout=10).text)

    def delivered(self) -> float:
        return self.worker_metrics().get('sami_gateway_webhook_attempts_total{outcome="delivered"}', 0.0)

    def healthy(self) -> None:
        """Both processes alive, and no traceback in their logs."""
        for role in (self.front, self.worker):
            text = role.log.read_text(errors="replace")
            assert role.alive(), f"{role.kind} exited with {role.process.returncode}:\n{text[-4000:]}"
            for unexpected in UNEXPECTED:
                assert unexpected not in text, f"{role.kind} logged {unexpected!r}:\n{_around(text, unexpected)}"


@pytest.fixture(scope="module")
def cluster(redis: Server, s3: Server, model_store: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = gateway_env(model_store, 0, SAMI_APPKEYS=",".join(APPKEYS), SAMI_THREADS="1",
                      SAMI_WEBHOOK_SECRET=WEBHOOK_SECRET, SAMI_WEBHOOK_TIMEOUT="30", SAMI_STEM_CACHE_BYTES="0",
                      SAMI_FETCH_ALLOW="127.0.0.1", SAMI_LOG_LEVEL="INFO",
                      PYTHONFAULTHANDLER="1")  # a process that crashes says where
    stack = Stack(redis, s3, env, tmp_path_factory.mktemp("faults"))
    try:
        front, worker = stack.front(), stack.worker()
        stack.wait_healthy(front, worker)
        stack.wait_ready(front)
        yield Cluster(stack, front, worker, {key: issue_token(key) for key in APPKEYS})
    finally:
        stack.stop()


def _around(text: str, needle: str) -> str:
    at = text.index(needle)
    return text[max(0, at - 200):at + 3000]


# -- continuous traffic of both appkeys ---------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request's answer: its HTTP status (0: none within the bound), SAMI code and time taken."""

    kind: str  # "job" or "invoke"
    appkey: str
    status: int
    code: int | None
    sent: float  # monotonic
    seconds: float

    @property
    def expected(self) -> bool:
        """A success, or 503 50300003 (Redis or the storage away) in the envelope."""
        success = (201, None) if self.kind == "job" else (200, 20000000)
        return (self.status, self.code) in (success, (503, 50300003))


@dataclass
class Traffic:
    """Per appkey, a thread that submits jobs (with a webhook to `hooks`) and one that sends invokes,
    each waiting for its answer, then `every` seconds, then the next."""

    cluster: Cluster
    hooks: Receiver
    every: float = 1.0
    outcomes: list[Outcome] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> appkey
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _seeds: Iterator[int] = field(default_factory=lambda: iter(range(10_000, 10_000_000)))
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(kind, appkey), daemon=True)
                         for appkey in APPKEYS for kind in ("job", "invoke")]
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_BOUND * 2 + 10)
            assert not thread.is_alive(), "a request is still unanswered"

    def jobs(self) -> dict[str, str]:
        with self.lock:
            return dict(self.accepted)

    def _run(self, kind: str, appkey: str) -> None:
        while not self._stop.is_set():
            with self.lock:
                seed = next(self._seeds)
            if kind == "job":
                self._send(kind, appkey, partial(self.cluster.submit, appkey, seed, webhook_url=self.hooks.at("/hook")))
            else:
                self._send(kind, appkey, partial(self.cluster.invoke, appkey, seed))
            self._stop.wait(self.every)

    def _send(self, kind: str, appkey: str, send: Callable[[], requests.Response]) -> None:
        sent = time.monotonic()
        try:
            answer = send()
        except requests.RequestException:
            outcome = Outcome(kind, appkey, 0, None, sent, time.monotonic() - sent)
        else:
            outcome = Outcome(kind, appkey, answer.status_code, _sami_code(answer), sent, time.monotonic() - sent)
            if kind == "job" and answer.status_code == 201:
                with self.lock:
                    self.accepted[answer.json()["id"]] = appkey
        with self.lock:
            self.outcomes.append(outcome)

    def check_answers(self) -> Outcome:
        """Every request answered within the bound, each a success or the 503; the slowest."""
        with self.lock:
            outcomes = list(self.outcomes)
        assert not [outcome for outcome in outcomes if not outcome.expected], outcomes
        slowest = max(outcomes, key=lambda outcome: outcome.seconds)
        assert slowest.seconds < ANSWER_BOUND, slowest
        for appkey in APPKEYS:  # each appkey was served, not only refused
            assert any(o.appkey == appkey and o.status in (200, 201) for o in outcomes), appkey
        return slowest

    def counts(self) -> dict[str, int]:
        with self.lock:
            names = [f"{outcome.kind} {outcome.status}" for outcome in self.outcomes]
        return {name: names.count(name) for name in sorted(set(names))}


def _sami_code(answer: requests.Response) -> int | None:
    try:
        body = answer.json()
    except ValueError:
        return -1
    if body.get("error"):
        return int(body["error"]["status_code"])
    return int(body["status_code"]) if "status_code" in body else None


@contextmanager
def traffic_of_both(cluster: Cluster, every: float = 1.0) -> Iterator[Traffic]:
    """Both appkeys' traffic while the block runs; then every webhook of a job it got accepted arrives."""
    with receiver() as hooks:
        traffic = Traffic(cluster, hooks, every)
        traffic.start()
        try:
            yield traffic
        finally:
            traffic.finish()
        webhooks_arrive(hooks, traffic)


def paused(server: Server, seconds: float) -> float:
    """`server` stopped (SIGSTOP) for `seconds`; when it was resumed (monotonic)."""
    server.pause()
    try:
        time.sleep(seconds)
    finally:
        server.resume()
    return time.monotonic()


@dataclass(frozen=True)
class Recovery:
    """Seconds from a resume until the front was ready, and until every job accepted by then had ended."""

    ready: float
    drained: float


def settled(cluster: Cluster, traffic: Traffic, resumed: float) -> Recovery:
    """Wait until the front is ready and every job accepted so far has ended, each `succeeded` (none
    lost, none left queued or processing), within a minute of `resumed`."""
    cluster.stack.wait_ready(cluster.front, RECOVERY_BOUND)
    ready = time.monotonic() - resumed
    for job_id, appkey in traffic.jobs().items():
        left = RECOVERY_BOUND - (time.monotonic() - resumed)
        assert left > 0, f"job {job_id} not ended {RECOVERY_BOUND:g} s after the resume: {cluster.job(job_id, appkey)}"
        job = cluster.finished(job_id, appkey, left)
        assert job["status"] == "succeeded", job
    return Recovery(ready, time.monotonic() - resumed)


def no_slot_held(cluster: Cluster) -> None:
    """With no request in flight, no appkey's concurrency slot is held (each would be a 429 later)."""
    client = SyncRedis.from_url(cluster.stack.redis.url)
    try:
        wait_for(lambda: not any(client.zcard(held(appkey)) for appkey in APPKEYS), 10, "the slots are released",
                 interval=0.2)
    finally:
        client.close()


def webhooks_arrive(hooks: Receiver, traffic: Traffic) -> None:
    """The webhook of every job accepted arrives, once."""
    ids = sorted(traffic.jobs())
    wait_for(lambda: len(hooks.received("/hook")) >= len(ids), RECOVERY_BOUND, f"{len(ids)} webhooks", interval=0.2)
    time.sleep(ONCE_SECONDS)
    delivered = sorted(json.loads(item.body)["data"]["job"]["id"] for item in hooks.received("/hook"))
    assert delivered == ids, (len(delivered), len(ids))


# -- a receiver answering too much, or too slowly -----------------------------------------------------


def test_a_huge_reply_to_the_worker_is_not_read(cluster: Cluster) -> None:
    """A receiver answering 1.5 GB to a copy PUT and a webhook of one appkey's job, sent by the worker:
    its peak RSS rises less than 100 MB above the peak of the same two jobs without the fault, both
    count as answered, and the other appkey's job succeeds."""
    pid = cluster.worker.process.pid
    seeds = iter(range(100, 200))

    def both_appkeys(**fields: Any) -> None:
        mine = cluster.submit(APPKEY, next(seeds), **fields)
        theirs = cluster.submit(OTHER_APPKEY, next(seeds))
        assert (mine.status_code, theirs.status_code) == (201, 201), (mine.text, theirs.text)
        assert cluster.finished(mine.json()["id"], APPKEY)["status"] == "succeeded"
        assert cluster.finished(theirs.json()["id"], OTHER_APPKEY)["status"] == "succeeded"

    baseline = warm_up(pid, both_appkeys)
    sent = cluster.delivered()
    with replier() as hostile:
        reset_peak(pid)
        both_appkeys(copy_results_to={"vocals": hostile.url + "/copy"}, webhook_url=hostile.url + "/hook")
        wait_for(lambda: len(hostile.sent) == 2, 60, "for the webhook")
        growth = memory(pid, "VmHWM") - baseline
    print(f"worker peak RSS {growth / 2**20:+.1f} MiB from {baseline / 2**20:.0f} MiB without the fault; "
          f"reply bytes sent before the worker left: {hostile.sent}")
    assert growth < RSS_BOUND_BYTES, f"the worker's peak RSS rose {growth / 2**20:.0f} MiB"
    assert [line.split()[0] for line in hostile.requests] == ["PUT", "POST"]
    assert max(hostile.sent) < HUGE_REPLY_BYTES
    assert cluster.delivered() == sent + 1
    cluster.healthy()


def test_a_trickling_reply_does_not_hold_the_workers_delivery(cluster: Cluster) -> None:
    """A receiver sending its reply a byte every half second: delivered at the status line, long
    before the webhook timeout (30 s here)."""
    sent = cluster.delivered()
    with replier(trickle=True) as slow:
        job = cluster.submit(OTHER_APPKEY, 300, webhook_url=slow.url + "/hook")
        assert job.status_code == 201, job.text
        cluster.finished(job.json()["id"], OTHER_APPKEY)
        ended = time.monotonic()
        wait_for(lambda: cluster.delivered() > sent, 10, "for the delivery", interval=0.2)
        assert time.monotonic() - ended < 10


# -- Redis and the storage paused ---------------------------------------------------------------------


@pytest.mark.parametrize("away", ["redis", "storage"])
def test_a_pause_under_traffic_loses_no_accepted_job(cluster: Cluster, away: str) -> None:
    """Redis, or the storage, SIGSTOPped for 13 s while both appkeys submit jobs and invokes: every
    request is answered within 30 s (a success or 503 50300003), both processes live on, and every job
    accepted ends `succeeded` with its webhook sent once, within a minute of the resume."""
    server = cluster.stack.redis if away == "redis" else cluster.stack.s3
    with traffic_of_both(cluster) as traffic:
        time.sleep(2.0)
        pause_at = time.monotonic()
        resumed = paused(server, PAUSE_SECONDS)
        recovered = settled(cluster, traffic, resumed)
        time.sleep(1.0)  # and traffic once it has recovered
    settled(cluster, traffic, time.monotonic())
    slowest = traffic.check_answers()
    no_slot_held(cluster)
    cluster.healthy()
    print(f"{away} paused {PAUSE_SECONDS:g} s: the front ready {recovered.ready:.1f} s after the resume, every job "
          f"accepted by then succeeded {recovered.drained:.1f} s after it; {len(traffic.accepted)} jobs accepted, "
          f"0 lost; answers {traffic.counts()}, the slowest ({slowest.kind} {slowest.status}, sent "
          f"{slowest.sent - pause_at:+.1f} s from the pause) in {slowest.seconds:.1f} s")


# -- the soak: every fault in turn, for as long as asked ----------------------------------------------


@pytest.mark.skipif(not SOAK_MINUTES, reason=f"opt-in soak, off by default: {SOAK_COMMAND}")
@pytest.mark.timeout(SOAK_MINUTES * 60 + 900)
def test_soak_every_fault_in_turn_under_continuous_traffic(cluster: Cluster) -> None:
    """Both appkeys' traffic throughout; in turn, over and over for SAMI_SOAK_MINUTES: a huge reply to a
    copy and a webhook, a trickling reply, Redis paused, the storage paused (10 to 20 s each). After each
    pause every job accepted so far has succeeded; at the end every answer was a success or the 503
    within 30 s, every webhook arrived once, and the worker's peak RSS over the soak stayed within
    100 MB of its peak under the same traffic without faults."""
    rng, pid = random.Random(20), cluster.worker.process.pid
    recoveries: dict[str, list[Recovery]] = {"redis": [], "storage": []}
    seeds = iter(range(500_000, 1_000_000))
    with traffic_of_both(cluster, SOAK_EVERY) as traffic:
        baseline = warm_up(pid, lambda: time.sleep(SOAK_WINDOW))
        reset_peak(pid)
        ends, cycles = time.monotonic() + SOAK_MINUTES * 60, 0
        while time.monotonic() < ends:
            cycles += 1
            try:
                hostile_replies(cluster, next(seeds))
                for away, server in (("redis", cluster.stack.redis), ("storage", cluster.stack.s3)):
                    resumed = paused(server, rng.uniform(*SOAK_PAUSES))
                    recoveries[away].append(settled(cluster, traffic, resumed))
            finally:
                cluster.healthy()  # a process gone is said first
        growth = memory(pid, "VmHWM") - baseline
    settled(cluster, traffic, time.monotonic())
    slowest = traffic.check_answers()
    no_slot_held(cluster)
    cluster.healthy()
    print(f"soak of {SOAK_MINUTES:g} min, {cycles} cycles: {len(traffic.accepted)} jobs accepted, 0 lost; "
          f"answers {traffic.counts()}, the slowest in {slowest.seconds:.1f} s; after a resume, the front ready and "
          f"every job accepted ended in at most {_most(recoveries['redis'])} (Redis), "
          f"{_most(recoveries['storage'])} (storage); worker "
          f"peak RSS {growth / 2**20:+.1f} MiB from {baseline / 2**20:.0f} MiB under traffic without faults")
    assert growth < RSS_BOUND_BYTES, f"the worker's peak RSS rose {growth / 2**20:.0f} MiB"


def hostile_replies(cluster: Cluster, seed: int) -> None:
    """A job of one appkey copying to and calling a receiver that answers 1.5 GB, and one of the other
    whose webhook receiver trickles its reply: both succeed, each reply is left unread."""
    with replier() as huge, replier(trickle=True) as slow:
        mine = cluster.submit(APPKEY, seed, copy_results_to={"vocals": huge.url + "/copy"},
                              webhook_url=huge.url + "/hook")
        theirs = cluster.submit(OTHER_APPKEY, seed + 1, webhook_url=slow.url + "/hook")
        for answer, appkey in ((mine, APPKEY), (theirs, OTHER_APPKEY)):
            assert answer.status_code == 201, answer.text
            assert cluster.finished(answer.json()["id"], appkey)["status"] == "succeeded"
        wait_for(lambda: len(huge.sent) == 2 and len(slow.requests) == 1, 60, "for both webhooks")
        assert max(huge.sent) < HUGE_REPLY_BYTES


def _most(recoveries: list[Recovery]) -> str:
    return (f"{max(recovery.ready for recovery in recoveries):.1f} s and "
            f"{max(recovery.drained for recovery in recoveries):.1f} s")
