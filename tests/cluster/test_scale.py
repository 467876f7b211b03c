"""Scale-out end to end: two fronts and two workers over a real Redis and a real S3 server.

Everything is a real process on loopback: `redis-server`, SeaweedFS's `weed mini`, two
`sami-gateway serve` fronts and two `sami-gateway worker`s with the tiny demo models.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sami_client import SamiClient, WebhookVerificationError, verify_webhook

from tests.conftest import APPKEY, ROOT, Gateway, gateway_env, issue_token, wav_bytes
from tests.jobs.live import (
    TERMINAL,
    WEBHOOK_SECRET,
    Receiver,
    audio_of,
    parse_metrics,
    read_while_processing,
    song,
    wait_for,
)
from tests.servers import Server

from .stack import Role, Stack

APPKEYS = (APPKEY, "second-appkey", "third-appkey")
TIGHT = "tight-appkey"  # concurrent = 2, whichever front it reaches
LEASE = 2.0


@pytest.fixture(scope="module")
def stack(redis: Server, s3: Server, model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("scale")
    config = folder / "appkeys.toml"
    config.write_text("".join(f"[appkeys.{key}]\n" for key in APPKEYS) + f"[appkeys.{TIGHT}]\nconcurrent = 2\n")
    env = gateway_env(model_store, 0, SAMI_CONFIG=str(config), SAMI_WORK_LEASE=str(LEASE), SAMI_THREADS="1",
                      SAMI_WEBHOOK_SECRET=WEBHOOK_SECRET, SAMI_STEM_CACHE_BYTES="0", SAMI_LOG_LEVEL="INFO",
                      SAMI_FETCH_ALLOW="127.0.0.1", SAMI_MAX_AUDIO_SECONDS="600",
                      SAMI_STREAM_JOBS="true")  # every wav job span by span, its stems readable as they are written
    env.pop("SAMI_APPKEYS")
    stack = Stack(redis, s3, env, folder)
    try:
        fronts = [stack.front(), stack.front()]
        workers = [stack.worker(), stack.worker()]
        stack.wait_healthy(*fronts, *workers)
        for front in fronts:
            stack.wait_ready(front)
        yield stack
    finally:
        stack.stop()


def fronts(stack: Stack) -> list[Role]:
    return [role for role in stack.roles if role.kind == "serve" and role.alive()]


def workers(stack: Stack) -> list[Role]:
    return [role for role in stack.roles if role.kind == "worker" and role.alive()]


def invoke(front: Role, appkey: str, data: bytes, token: str, timeout: float = 120,
           **payload: Any) -> requests.Response:
    body = {"appkey": appkey, "token": token, "namespace": "MusicSourceSeparate",
            "data": base64.b64encode(data).decode(), "payload": json.dumps({"model": "2track_vocal", **payload})}
    return requests.post(front.url + "/api/v1/invoke", json=body, timeout=timeout)


def submit(front: Role, token: str, data: bytes, timeout: float = 60, **fields: Any) -> requests.Response:
    """POST a job with its input inline (vocals unless `fields` say otherwise)."""
    body = {"input": {"data": base64.b64encode(data).decode()}, "stems": ["vocals"], **fields}
    return requests.post(front.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                         timeout=timeout, json=body)


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    return {key: issue_token(key) for key in (*APPKEYS, TIGHT)}


def test_seed_clients_and_the_sdk_work_against_either_front(stack: Stack, tokens: dict[str, str],
                                                            tmp_path: Path) -> None:
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(1.5))
    for front in fronts(stack):
        env = {**os.environ, "SAMI_URL": front.url, "SAMI_APPKEY": APPKEY, "SAMI_TOKEN": tokens[APPKEY]}
        run = subprocess.run([sys.executable, str(ROOT / "examples/python/invoke.py"), str(source), "2track_acc"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "status_code=20000000" in run.stdout, run.stdout + run.stderr
        samples, rate = audio_of((tmp_path / "output.wav").read_bytes())
        assert rate == 44100 and samples.shape == (int(1.5 * 44100), 1)
    first, second = fronts(stack)
    with SamiClient(first.url, token=tokens[APPKEY]) as client:
        job = client.submit(data=song(20.0, seed=1), stems=["vocals", "no_vocals"], output={"format": "wav"})
    with SamiClient(second.url, token=tokens[APPKEY]) as client:
        streamed = list(client.events(job.id))  # the other front's event stream, fed by the worker's changes
        assert streamed[-1].event == "status" and streamed[-1].status == "succeeded", streamed
        done = client.wait(job.id, timeout=120)
        assert done.status == "succeeded", done
        url = done.result["vocals"].url
        assert urlsplit(url).netloc == urlsplit(stack.s3.env["AWS_ENDPOINT_URL"]).netloc  # straight from storage
        samples, rate = audio_of(requests.get(url, timeout=30).content)
        assert samples.shape[0] == 20.0 * rate
        through = requests.get(f"{second.url}/api/v1/jobs/{job.id}/results/no_vocals", allow_redirects=False,
                               headers={"Authorization": f"Bearer {tokens[APPKEY]}"}, timeout=30)
        assert through.status_code == 302 and through.headers["Location"].startswith(stack.s3.env["AWS_ENDPOINT_URL"])
        files = client.download(done, tmp_path / "stems")  # the SDK follows the redirect, without its token
        decoded = {stem: audio_of(path.read_bytes()) for stem, path in files.items()}
        assert {stem: samples.shape[0] / rate for stem, (samples, rate) in decoded.items()} == {
            "vocals": 20.0, "no_vocals": 20.0}


def run_totals(roles: list[Role]) -> dict[str, float]:
    """Audio-seconds and stem-cache misses, summed over `roles` as a dashboard's `sum` does."""
    totals = {"audio": 0.0, "misses": 0.0}
    for role in roles:
        for key, value in parse_metrics(requests.get(role.url + "/metrics", timeout=10).text).items():
            if key.startswith("sami_gateway_audio_seconds_total"):
                totals["audio"] += value
            elif key.startswith("sami_gateway_stem_cache_misses_total"):
                totals["misses"] += value
    return totals


def test_a_run_is_counted_once_across_the_fleet(stack: Stack, tokens: dict[str, str]) -> None:
    """An invoke runs on a worker and is answered by a front: it is counted where it ran, so the
    fleet's sum is the audio really processed."""
    roles = fronts(stack) + workers(stack)
    before = run_totals(roles)
    response = invoke(fronts(stack)[0], APPKEY, wav_bytes(3.0), tokens[APPKEY])
    assert response.json()["status_code"] == 20000000, response.text
    wait_for(lambda: run_totals(roles)["audio"] > before["audio"], 10, "the run was not counted")
    time.sleep(1)  # anything counted late would be counted by now
    after = run_totals(roles)
    assert after["audio"] - before["audio"] == pytest.approx(3.0)
    assert after["misses"] - before["misses"] == 1
    assert run_totals(fronts(stack)) == {"audio": 0.0, "misses": 0.0}


def test_sighup_changes_an_appkeys_webhook_secret_on_every_role(stack: Stack, tokens: dict[str, str],
                                                                  hooks: Receiver) -> None:
    """Workers sign webhooks: a per-appkey secret changed in the file and reloaded with SIGHUP signs
    the next job's webhook, with no restart."""
    config = Path(stack.base_env["SAMI_CONFIG"])
    original = config.read_text()
    secrets = ["first-secret-0123456789", "second-secret-0123456789"]
    try:
        for n, secret in enumerate(secrets):
            config.write_text(original.replace("[appkeys.third-appkey]\n",
                                               f"[appkeys.third-appkey]\nwebhook_secret = \"{secret}\"\n"))
            for role in fronts(stack) + workers(stack):
                role.process.send_signal(signal.SIGHUP)
            time.sleep(1)  # the signal is handled on each role's loop
            job = submit(fronts(stack)[n % 2], tokens["third-appkey"], wav_bytes(1.0),
                         webhook_url=hooks.at(f"/secret/{n}"), output={"format": "wav"})
            assert job.status_code == 201, job.text
            delivered = wait_for(lambda n=n: hooks.received(f"/secret/{n}"), 60, "the webhook arrives")
            event = verify_webhook(delivered[0].headers, delivered[0].body, secret)
            assert event.type == "job.succeeded"
            with pytest.raises(WebhookVerificationError):
                verify_webhook(delivered[0].headers, delivered[0].body, secrets[1 - n])
    finally:
        config.write_text(original)
        for role in fronts(stack) + workers(stack):
            role.process.send_signal(signal.SIGHUP)


def test_deep_metadata_is_refused_or_carried_to_the_end_in_scale_out(stack: Stack, tokens: dict[str, str],
                                                                        hooks: Receiver) -> None:
    """Metadata 253 deep used to make a scale-out job unfinishable (processing at 99.9 % for ever, its
    cancel and DELETE 500): it is refused at the front, and 32 deep runs, is sent and is deleted."""
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(depth - 1):
            value = {"a": value}
        return value

    token, front = tokens["second-appkey"], fronts(stack)[0]
    refused = submit(front, token, wav_bytes(1.0), metadata=nested(253), webhook_url=hooks.at("/deep/253"))
    assert refused.status_code == 400 and refused.json()["error"]["status_code"] == 40000022, refused.text
    job = submit(front, token, wav_bytes(1.0), metadata=nested(32), webhook_url=hooks.at("/deep/32"),
                 output={"format": "wav"})
    assert job.status_code == 201, job.text
    job_id, auth = job.json()["id"], {"Authorization": f"Bearer {token}"}
    done = wait_for(lambda: (r := requests.get(f"{front.url}/api/v1/jobs/{job_id}", headers=auth, timeout=10).json())
                    ["status"] in TERMINAL and r, 120, "the job ends")
    assert done["status"] == "succeeded" and done["metadata"] == nested(32)
    delivered = wait_for(lambda: hooks.received("/deep/32"), 60, "its webhook arrives")
    assert json.loads(delivered[0].body)["data"]["job"]["metadata"] == nested(32)
    listed = requests.get(f"{front.url}/api/v1/jobs", headers=auth, timeout=10)
    assert listed.status_code == 200 and job_id in [item["id"] for item in listed.json()["jobs"]]
    assert requests.delete(f"{front.url}/api/v1/jobs/{job_id}", headers=auth, timeout=10).status_code == 204


def test_go_sample_client_against_a_front(stack: Stack, tokens: dict[str, str], go_client: Path,
                                          tmp_path: Path) -> None:
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(1.5, rate=48000, channels=1))
    for front in fronts(stack):
        env = {**os.environ, "SAMI_URL": front.url, "SAMI_APPKEY": APPKEY, "SAMI_TOKEN": tokens[APPKEY]}
        run = subprocess.run([str(go_client), str(source), "2track_vocal"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        samples, rate = audio_of((tmp_path / "output.wav").read_bytes())
        assert rate == 44100 and samples.shape == (int(1.5 * 44100), 1)


def test_an_error_has_the_same_envelope_as_the_single_process(stack: Stack, tokens: dict[str, str],
                                                              gateway: Gateway) -> None:
    answer = invoke(fronts(stack)[0], APPKEY, b"not audio at all", tokens[APPKEY])
    single = invoke(Role("serve", gateway.url, gateway.process, Path()), APPKEY, b"not audio at all", gateway.token)
    body, expected = answer.json(), single.json()
    assert (answer.status_code, body["status_code"]) == (400, 40000012), body  # decoded on a worker
    assert answer.status_code == single.status_code
    assert {k: v for k, v in body.items() if k != "task_id"} == {k: v for k, v in expected.items() if k != "task_id"}


def test_forty_mixed_requests_survive_a_worker_killed(stack: Stack, tokens: dict[str, str], hooks: Receiver) -> None:
    """Jobs and invokes of three appkeys through both fronts; one worker SIGKILLed in the middle."""
    front_a, front_b = fronts(stack)
    jobs: dict[str, str] = {}
    lock = threading.Lock()

    def submit(n: int) -> str:
        appkey, front = APPKEYS[n % 3], (front_a, front_b)[n % 2]
        answer = requests.post(front.url + "/api/v1/jobs", timeout=60, headers={
            "Authorization": f"Bearer {tokens[appkey]}", "Idempotency-Key": f"mixed-{n}"}, json={
            "input": {"data": base64.b64encode(song(6.0, seed=100 + n)).decode()}, "stems": ["vocals"],
            "output": {"format": "wav"}, "webhook_url": hooks.at(f"/hook/{n}")})
        assert answer.status_code == 201, answer.text
        with lock:
            jobs[answer.json()["id"]] = appkey
        return str(answer.json()["id"])

    def call(n: int) -> int:
        appkey, front = APPKEYS[n % 3], (front_a, front_b)[n % 2]
        return invoke(front, appkey, song(2.0, seed=200 + n), tokens[appkey]).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        job_futures = [pool.submit(submit, n) for n in range(24)]
        invoke_futures = [pool.submit(call, n) for n in range(16)]
        for future in job_futures:
            future.result()
        victim = workers(stack)[0]
        wait_for(lambda: "job_" in requests.get(victim.url + "/healthz", timeout=5).text or
                 requests.get(victim.url + "/healthz", timeout=5).json()["holding"]["batch"] > 0, 60,
                 "the victim holds a job")
        killed_at = time.monotonic()
        victim.kill()
        statuses = [future.result() for future in invoke_futures]
    assert statuses == [200] * 16
    finished = {job_id: wait_for(lambda job_id=job_id, appkey=appkey: _terminal(front_b, job_id, tokens[appkey]),
                                 240, f"job {job_id} finishes")
                for job_id, appkey in jobs.items()}
    assert {job["status"] for job in finished.values()} == {"succeeded"}, finished
    recovered = time.monotonic() - killed_at
    survivor = parse_metrics(requests.get(workers(stack)[0].url + "/metrics", timeout=10).text)
    taken_over = survivor.get('sami_gateway_lease_takeovers_total{class="batch"}', 0)
    assert taken_over >= 1, "the killed worker held a job that another worker completed"
    wait_for(lambda: all(len(hooks.received(f"/hook/{n}")) >= 1 for n in range(24)), 60, "every webhook arrives")
    time.sleep(LEASE * 2)  # a duplicate would come now
    deliveries = [len(hooks.received(f"/hook/{n}")) for n in range(24)]
    assert deliveries == [1] * 24, deliveries
    print(f"takeover: {taken_over:g} jobs taken over; all 24 done {recovered:.1f} s after the kill")
    stack.wait_healthy(stack.worker())  # back to two workers for the next tests


def _terminal(front: Role, job_id: str, token: str) -> dict[str, Any] | None:
    job = requests.get(f"{front.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"},
                       timeout=30).json()
    return job if job["status"] in TERMINAL else None


def test_concurrency_quota_is_shared_by_the_fronts(stack: Stack, tokens: dict[str, str]) -> None:
    front_a, front_b = fronts(stack)
    long_song = song(30.0, seed=7)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [pool.submit(invoke, front, TIGHT, long_song, tokens[TIGHT]) for front in (front_a, front_b)]
        time.sleep(1.0)  # both are admitted and running
        for front in (front_a, front_b):
            third = invoke(front, TIGHT, wav_bytes(0.5), tokens[TIGHT])
            assert (third.status_code, third.json()["status_code"]) == (429, 42900001), third.text
        assert [future.result().status_code for future in held] == [200, 200]
    assert invoke(front_a, TIGHT, wav_bytes(0.5), tokens[TIGHT]).status_code == 200  # released


def test_redis_paused_gives_503_then_recovers(stack: Stack, tokens: dict[str, str]) -> None:
    front = fronts(stack)[0]
    headers = {"Authorization": f"Bearer {tokens[APPKEY]}"}
    submitted = submit(front, tokens[APPKEY], song(4.0, seed=900))
    assert submitted.status_code == 201
    stack.redis.pause()
    try:
        started = time.monotonic()
        answer = invoke(front, APPKEY, wav_bytes(0.5), tokens[APPKEY], timeout=30)
        assert answer.status_code == 503 and answer.json()["status_code"] == 50300003, answer.text
        assert time.monotonic() - started < 15
        listing = requests.get(front.url + "/api/v1/jobs", headers=headers, timeout=30)
        assert listing.status_code == 503
        assert requests.get(front.url + "/readyz", timeout=30).status_code == 503
        time.sleep(max(0.0, 10 - (time.monotonic() - started)))
    finally:
        stack.redis.resume()
    stack.wait_ready(front)
    assert invoke(front, APPKEY, wav_bytes(0.5), tokens[APPKEY]).status_code == 200
    job = wait_for(lambda: _terminal(front, submitted.json()["id"], tokens[APPKEY]), 120, "the job finishes")
    assert job["status"] == "succeeded"


def _holding(worker: Role) -> int:
    return int(requests.get(worker.url + "/healthz", timeout=5).json()["holding"]["batch"])


def test_a_stem_being_computed_is_read_through_a_front_that_does_not_run_it(stack: Stack,
                                                                            tokens: dict[str, str]) -> None:
    """A worker writes the parts to the shared storage; the other front reads them as they come, then
    the rest of the finished file."""
    one, other = fronts(stack)[:2]
    stereo = {"format": "wav", "sample_rate": 44100, "channels": 2}  # 10.6 MB a minute: parts every 6 s of audio
    job = submit(one, tokens[APPKEY], song(120.0, seed=41), output=stereo).json()
    assert "id" in job, job
    headers = {"Authorization": f"Bearer {tokens[APPKEY]}"}
    streamed, first_mib, status = read_while_processing(other.url, headers, job["id"], "vocals")
    done = requests.get(f"{other.url}/api/v1/jobs/{job['id']}?wait=60", headers=headers, timeout=90).json()
    assert done["status"] == "succeeded", done
    finished = requests.get(f"{other.url}/api/v1/jobs/{job['id']}/results/vocals", headers=headers, timeout=60)
    print(f"\nfirst MiB through the other front {first_mib:.1f} s after processing began (the job {status})")
    assert status == "processing" and streamed == finished.content and len(streamed) == 44 + 4 * 120 * 44100


def test_cancel_reaches_the_worker_within_a_second(stack: Stack, tokens: dict[str, str]) -> None:
    front = fronts(stack)[1]
    headers = {"Authorization": f"Bearer {tokens['third-appkey']}"}
    job = submit(front, tokens["third-appkey"], song(240.0, seed=31)).json()
    runner = wait_for(lambda: next((w for w in workers(stack) if _holding(w) > 0), None), 60, "a worker runs it")
    progress = wait_for(lambda: requests.get(f"{front.url}/api/v1/jobs/{job['id']}", headers=headers,
                                             timeout=10).json()["progress"], 60, "the job makes progress")
    assert 0 < progress < 100  # reported by the worker, read through the front
    started = time.monotonic()
    cancelled = requests.post(f"{front.url}/api/v1/jobs/{job['id']}/cancel", headers=headers, timeout=10)
    assert cancelled.json()["status"] == "cancelled"
    wait_for(lambda: _holding(runner) == 0, 5, "the worker drops the job", interval=0.02)
    reached = time.monotonic() - started
    print(f"cancel reached the worker in {reached * 1000:.0f} ms")
    assert reached < 1.0


def test_a_front_killed_loses_its_connections_not_its_jobs(stack: Stack, tokens: dict[str, str]) -> None:
    doomed = stack.front()
    stack.wait_healthy(doomed)
    stack.wait_ready(doomed)
    accepted = []
    for n in range(6):
        answer = submit(doomed, tokens[APPKEY], song(8.0, seed=500 + n))
        assert answer.status_code == 201
        accepted.append(answer.json()["id"])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(invoke, doomed, "second-appkey", song(60.0, seed=600 + n), tokens["second-appkey"])
                     for n in range(3)]
        time.sleep(1.5)
        doomed.kill()
        for future in in_flight:
            with pytest.raises(requests.ConnectionError):
                future.result()
    survivor = fronts(stack)[0]
    for job_id in accepted:
        job = wait_for(lambda job_id=job_id: _terminal(survivor, job_id, tokens[APPKEY]), 240, f"{job_id} finishes")
        assert job["status"] == "succeeded"


def test_storage_paused_gives_503_then_recovers(stack: Stack, tokens: dict[str, str]) -> None:
    front = fronts(stack)[0]
    before = submit(front, tokens[APPKEY], song(20.0, seed=901))
    assert before.status_code == 201
    stack.s3.pause()
    try:
        started = time.monotonic()
        refused = submit(front, tokens[APPKEY], song(1.0, seed=902))
        assert refused.status_code == 503 and refused.json()["error"]["status_code"] == 50300003, refused.text
        assert requests.get(front.url + "/readyz", timeout=30).json()["storage"] is False
        time.sleep(max(0.0, 10 - (time.monotonic() - started)))
    finally:
        stack.s3.resume()
    stack.wait_ready(front)
    job = wait_for(lambda: _terminal(front, before.json()["id"], tokens[APPKEY]), 180, "the job accepted before")
    assert job["status"] == "succeeded", job


def test_fronts_and_workers_export_the_queue_metrics(stack: Stack) -> None:
    for role in [*fronts(stack), *workers(stack)]:
        metrics = wait_for(lambda role=role: (values := parse_metrics(
            requests.get(role.url + "/metrics", timeout=10).text)).get("sami_gateway_workers_alive", 0) >= 2
            and values, 30, f"{role.kind} counts the workers")
        for cls in ("interactive", "batch"):
            assert f'sami_gateway_work_queued{{class="{cls}"}}' in metrics
            assert f'sami_gateway_work_oldest_queued_age_seconds{{class="{cls}"}}' in metrics
    health = requests.get(workers(stack)[0].url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["redis"] is True and health["taking"] is True


def test_a_worker_stopped_hands_its_job_to_another_at_once(stack: Stack, tokens: dict[str, str]) -> None:
    """SIGTERM with a job longer than the grace: the job goes back to the queue as the worker stops
    (a rolling restart), not after the lease."""
    leaving = stack.worker(SAMI_SHUTDOWN_GRACE="0.5")
    stack.wait_healthy(leaving)
    others = [w for w in workers(stack) if w is not leaving]
    for worker in others:  # only the leaving worker is free to take the job
        worker.process.send_signal(signal.SIGSTOP)
    try:
        job = submit(fronts(stack)[0], tokens[APPKEY], song(240.0, seed=77)).json()
        wait_for(lambda: _holding(leaving) > 0, 60, "the leaving worker runs the job")
    finally:
        for worker in others:
            worker.process.send_signal(signal.SIGCONT)
    stopped = time.monotonic()
    leaving.process.send_signal(signal.SIGTERM)
    try:
        code = leaving.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(subprocess.TimeoutExpired):  # its stack dump, 20 s past the grace, lands in the log
            leaving.process.wait(timeout=30)
        raise AssertionError(f"the worker did not exit; its log:\n{leaving.log.read_text()[-6000:]}") from None
    assert code == 0
    wait_for(lambda: any(_holding(w) > 0 for w in others), 10, "another worker takes it over")
    handed = time.monotonic() - stopped
    assert handed < LEASE + 5 and "handed back to the queue" in leaving.log.read_text()
    finished = wait_for(lambda: _terminal(fronts(stack)[0], job["id"], tokens[APPKEY]), 240, "the job finishes")
    assert finished["status"] == "succeeded"


def test_the_page_on_a_front_lists_models_and_allows_results_from_storage(stack: Stack,
                                                                          tokens: dict[str, str]) -> None:
    """/ui on a front: its policy lets the page fetch presigned results from storage's origin, and the
    model picker's listing comes from the front (which reads model headers, loading no model)."""
    front = fronts(stack)[0]
    page = requests.get(front.url + "/ui", timeout=10)
    assert page.status_code == 200
    storage = urlsplit(stack.s3.env["AWS_ENDPOINT_URL"])
    assert f"connect-src 'self' {storage.scheme}://{storage.netloc};" in page.headers["Content-Security-Policy"]
    listed = requests.get(front.url + "/api/v1/models", headers={"Authorization": f"Bearer {tokens[APPKEY]}"},
                          timeout=10)
    assert listed.status_code == 200, listed.text
    assert {"htdemucs", "htdemucs_ft"} <= {model["name"] for model in listed.json()["models"]}
