"""Every verb of the Jobs API over raw HTTP (`requests`) against a live `sami-gateway serve` running the
real MusicSourceSeparate namespace on the tiny demo models, with real audio in and out."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from sami_client import WebhookVerificationError, sign_webhook, verify_webhook

from namespaces.music_source_separate.audio.encode import encode

from ..conftest import APPKEY
from .live import (
    OTHER_APPKEY,
    SONG_RATE,
    TEN_MINUTES,
    WEBHOOK_SECRET,
    LiveGateway,
    Receiver,
    audio_of,
    origin,
    read_while_processing,
    song,
    start_gateway,
    stop_gateway,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
SMALL = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}  # what the 10-minute song's stems are




def submit(live: LiveGateway, body: dict[str, Any], appkey: str = APPKEY, **headers: str) -> requests.Response:
    return requests.post(live.url + "/api/v1/jobs", json=body, headers={**live.headers(appkey), **headers},
                         timeout=60)


def data(content: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(content).decode()}


def created(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "processing")
    return job


def refused(response: requests.Response, http: int, code: int) -> dict[str, Any]:
    assert response.status_code == http, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"]["status_code"] == code and body["error"]["message"] and body["request_id"], body
    return body


def result(live: LiveGateway, job_id: str, stem: str, appkey: str = APPKEY, **headers: str) -> requests.Response:
    return requests.get(f"{live.url}/api/v1/jobs/{job_id}/results/{stem}",
                        headers={**live.headers(appkey), **headers}, timeout=60)


def check_stem(body: bytes, described: dict[str, Any], frames: int, rate: int, channels: int) -> None:
    """The file is the one described, and decodes to `frames` frames at `rate`."""
    assert len(body) == described["size"] and hashlib.sha256(body).hexdigest() == described["sha256"]
    samples, got_rate = audio_of(body)
    assert (samples.shape, got_rate) == ((frames, channels), rate)
    assert described["duration"] == pytest.approx(frames / rate, abs=1e-3)


def sse_events(response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a Server-Sent Events stream."""
    event, lines = "", list[str]()
    for raw in response.iter_lines():
        line = raw.decode()
        if line == "":
            if lines:
                yield event, json.loads("\n".join(lines))
            event, lines = "", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            lines.append(line[5:].strip())


def processing(live: LiveGateway, job_id: str, seconds: float = 60) -> dict[str, Any]:
    """The job once it is processing and some of its model calls are done."""
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = live.job(job_id).json()
        assert job["status"] in ("queued", "processing"), job
        return job if job["status"] == "processing" and job["progress"] > 0 else None
    found: dict[str, Any] = wait_for(check, seconds, f"for {job_id} to make progress")
    return found


CALLS = "sami_gateway_model_calls_total"
DROPPED = 'sami_gateway_jobs_total{outcome="cancelled"}'  # scheduler jobs dropped before their end


def url_expiry(url: str) -> int:
    """The unix second a signed URL expires at (its `expires`)."""
    return int(parse_qs(urlsplit(url).query)["expires"][0])


def dropped_since(live: LiveGateway, before: dict[str, float]) -> float:
    """Once the scheduler has dropped one more job and no model runs (the count stands still for 2 s):
    the model calls made since `before` (a scheduler job's calls are counted when it leaves)."""
    wait_for(lambda: live.metrics().get(DROPPED, 0) == before.get(DROPPED, 0) + 1, 15,
             "for the scheduler to drop the job's remaining model calls")
    calls = live.metrics()[CALLS]
    time.sleep(2)
    assert live.metrics()[CALLS] == calls, "model calls still run"
    return calls - before.get(CALLS, 0)


# -- the tests -----------------------------------------------------------------------------------


def invoke(live: LiveGateway, seconds: float, seed: int, model: str = "2track_vocal") -> float:
    """One invoke of a fresh clip (never a stem cache hit), checked; its latency in seconds."""
    began = time.monotonic()
    answer = requests.post(live.url + "/api/v1/invoke", timeout=60, json={
        "appkey": APPKEY, "token": live.token(), "namespace": "MusicSourceSeparate",
        "data": base64.b64encode(song(seconds, seed=seed, rate=44100, channels=2)).decode(),
        "payload": json.dumps({"model": model})})
    latency = time.monotonic() - began
    assert answer.status_code == 200, answer.text
    samples, rate = audio_of(base64.b64decode(answer.json()["data"]))
    assert samples.shape[0] == int(seconds * 44100) and rate == 44100
    return latency


def test_a_ten_minute_song_uploaded_then_split_while_invoke_keeps_answering(live: LiveGateway) -> None:
    """Upload (POST + signed PUT without a token), a 10-minute job, its events, long polls, and short
    invokes answered promptly while it runs, to its very end; then its stems have the song's length."""
    audio = song(TEN_MINUTES, seed=10)
    slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30)
    assert slot.status_code == 201, slot.text
    upload = slot.json()
    assert upload["upload_url"].startswith(live.url) and upload["expires_at"] and upload["max_bytes"] >= len(audio)
    put = requests.put(upload["upload_url"], data=audio, timeout=60)  # no Authorization: the URL is signed
    assert put.status_code == 200, put.text
    assert put.json() == {"upload_id": upload["upload_id"], "size": len(audio),
                          "sha256": hashlib.sha256(audio).hexdigest()}
    again = requests.put(upload["upload_url"], data=b"other bytes", timeout=30)
    refused(again, 409, 40900001)  # an upload is PUT once

    job = created(submit(live, {"input": {"upload_id": upload["upload_id"]}, "model": "htdemucs",
                                "stems": ["vocals", "no_vocals"], "output": SMALL, "name": "ten minutes",
                                "metadata": {"album": "live", "track": 1}}))
    assert job["stems"] == ["vocals", "no_vocals"] and job["output"] == SMALL and job["name"] == "ten minutes"
    events: list[tuple[str, dict[str, Any]]] = []
    stream = requests.get(f"{live.url}/api/v1/jobs/{job['id']}/events", headers=live.headers(), stream=True,
                          timeout=(10, 300))
    assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    reader = threading.Thread(target=lambda: events.extend(sse_events(stream)), daemon=True)
    reader.start()
    processing(live, job["id"])

    started = time.monotonic()
    polled = live.job(job["id"], wait=2)  # a long poll of a running job answers after its wait
    assert 1.9 <= time.monotonic() - started < 10 and polled.json()["status"] == "processing"
    refused(live.job(job["id"], wait=61), 400, 40000022)

    # Short invokes of every kind while the job separates: each answered, the job still running beside them.
    latencies: list[tuple[float, float]] = []  # (the job's progress when the invoke was sent, seconds)
    for n, (seconds, model) in enumerate([(1.0, "2track_vocal"), (1.5, "2track_acc"), (2.0, "2track_vocal"),
                                          (1.0, "bs_4track_vocal"), (1.5, "2track_vocal")]):
        progress = live.job(job["id"]).json()["progress"]
        latencies.append((progress, invoke(live, seconds, 100 + n, model)))
        assert live.job(job["id"]).json()["status"] == "processing", latencies
    # Then from the last model calls of the separation to the job's end (its stems written), back to back.
    wait_for(lambda: live.job(job["id"]).json()["progress"] >= 85, 300, "for the separation's last calls", 0.5)
    seed = 1000
    while (current := live.job(job["id"]).json())["status"] == "processing":
        latencies.append((current["progress"], invoke(live, 1.0, seed)))
        seed += 1
        assert seed < 1100, "the job did not end"

    done = live.finished(job["id"], 300)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == 100 and done["metadata"] == {"album": "live", "track": 1}
    assert done["input"] == {"format": "wav", "sample_rate": SONG_RATE, "channels": 1, "duration": TEN_MINUTES}
    assert done["started_at"] and done["completed_at"] and done["expires_at"] and done["error"] is None
    assert done["cache_hit"] is False
    for stem in ("vocals", "no_vocals"):
        answer = result(live, job["id"], stem)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "audio/wav"
        check_stem(answer.content, done["result"][stem], int(TEN_MINUTES * SONG_RATE), SONG_RATE, 1)

    reader.join(timeout=30)
    assert not reader.is_alive(), "the event stream did not end with the job"
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "status" and events[-1][1]["status"] == "succeeded", kinds
    progress_seen = [body["progress"] for kind, body in events if kind == "progress"]
    assert len(progress_seen) >= 3 and progress_seen == sorted(progress_seen), progress_seen
    assert len(set(progress_seen)) == len(progress_seen) and all(0 < value < 100 for value in progress_seen)

    # JOBS_API.md, Scheduling: a job in flight may make an invoke wait about one model call, no more. The
    # typical (median) invoke beside the job already includes that wait (a call of the tiny model takes
    # well under a second here); none may take twice as long and a second more.
    ordered = sorted(latency for _, latency in latencies)
    median = ordered[len(ordered) // 2]
    slow = [(progress, round(latency, 2)) for progress, latency in latencies if latency > 2 * median + 1]
    assert ordered[-1] < 10, latencies
    assert not slow, (f"invokes beside the 10-minute job waited far longer than one model call (median "
                      f"{median:.2f} s); (job progress when sent, seconds): {slow}")


def test_a_job_longer_than_an_invoke_may_be_is_fetched_to_disk_and_separated_span_by_span(
        live: LiveGateway) -> None:
    """Past SAMI_MAX_AUDIO_SECONDS (11 minutes here) a wav job streams, up to SAMI_MAX_JOB_SECONDS (11.5):
    its `url` input is downloaded to disk and separated span by span to its exact length. An mp3 input
    past SAMI_MAX_JOB_SECONDS is refused with the job's limit and the song's length."""
    seconds = TEN_MINUTES + 80
    audio = song(seconds, seed=14)
    with origin({"/long.wav": audio}) as server:
        job = created(submit(live, {"input": {"url": server + "/long.wav"}, "model": "htdemucs",
                                    "stems": ["vocals"], "output": SMALL}))
        streamed, first_mib, status = read_while_processing(live.url, live.headers(), job["id"], "vocals")
        done = live.finished(job["id"], 600)
    assert done["status"] == "succeeded", done["error"]
    assert done["input"] == {"format": "wav", "sample_rate": SONG_RATE, "channels": 1, "duration": seconds}
    assert done["cache_hit"] is False  # the song's first separation
    finished_file = result(live, job["id"], "vocals").content
    check_stem(finished_file, done["result"]["vocals"], int(seconds * SONG_RATE), SONG_RATE, 1)
    print(f"\nfirst MiB of the stem {first_mib:.1f} s after processing began; the job was {status} then")
    assert status == "processing" and first_mib < 30
    assert streamed == finished_file  # the wav's header is final from its first byte

    longer = song(seconds + 20, seed=15)  # past the job's limit: its frames counted, then refused
    mp3 = encode(audio_of(longer)[0].T.astype(np.float32), SONG_RATE, "mp3")
    form: dict[str, Any] = {"file": ("long.mp3", mp3, "audio/mpeg"),
                            "params": (None, json.dumps({"stems": ["vocals"], "output": SMALL}))}
    refused_job = live.finished(created(requests.post(live.url + "/api/v1/jobs", files=form, headers=live.headers(),
                                                      timeout=60))["id"])
    assert refused_job["status"] == "failed"
    assert f"audio lasts {seconds + 20:.1f} s, the limit is 690 s" in refused_job["error"]["message"]


def test_two_stems_come_from_one_separation_and_a_repeat_is_a_stem_cache_hit(live: LiveGateway) -> None:
    audio = song(6.0, seed=20, rate=44100, channels=2)
    body = {"input": data(audio), "model": "htdemucs", "stems": ["vocals", "no_vocals"], "output": {"format": "flac"}}
    before = live.metrics()
    first = live.finished(created(submit(live, body))["id"])
    after = live.metrics()
    assert first["status"] == "succeeded" and first["cache_hit"] is False, first
    done, calls = 'sami_gateway_jobs_total{outcome="done"}', CALLS
    assert after[done] - before.get(done, 0) == 1  # one scheduler job: one separation for both stems
    assert after[calls] > before[calls]
    stems = {}
    for stem in ("vocals", "no_vocals"):
        answer = result(live, first["id"], stem)
        assert answer.headers["Content-Type"] == "audio/flac"
        check_stem(answer.content, first["result"][stem], 6 * 44100, 44100, 2)
        stems[stem] = audio_of(answer.content)[0]
    mix = audio_of(audio)[0]  # no_vocals is the mix minus the vocals: together they give the song back
    assert abs(stems["vocals"] + stems["no_vocals"] - mix).max() < 4 / 32768

    second = live.finished(created(submit(live, body))["id"])
    again = live.metrics()
    assert second["status"] == "succeeded" and second["cache_hit"] is True, second
    assert again[done] == after[done] and again[calls] == after[calls]  # no model call at all
    for stem in ("vocals", "no_vocals"):
        assert second["result"][stem]["sha256"] == first["result"][stem]["sha256"]


@pytest.mark.parametrize("fmt,rate", [("m4a", 44100), ("mp3", 22050)])
def test_m4a_and_mp3_results_decode_to_the_exact_length_in_ffmpeg(live: LiveGateway, tmp_path: Path, fmt: str,
                                                                 rate: int) -> None:
    """AAC of exact length (in MP4, with an edit list) and MP3 (LAME's header) through jobs."""
    seconds = 3.3
    body = {"input": data(song(seconds, seed=40 + rate % 7, rate=44100, channels=2)), "model": "htdemucs",
            "stems": ["vocals"], "output": {"format": fmt, "sample_rate": rate, "channels": 2}}
    job = live.finished(created(submit(live, body))["id"])
    assert job["status"] == "succeeded" and job["output"]["format"] == fmt, job
    answer = result(live, job["id"], "vocals")
    assert answer.headers["Content-Type"] == {"m4a": "audio/mp4", "mp3": "audio/mpeg"}[fmt]
    assert f'filename="vocals.{fmt}"' in answer.headers["Content-Disposition"]
    target = tmp_path / f"vocals.{fmt}"
    target.write_bytes(answer.content)
    decoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(target), "-f", "f32le", "-"],
                             check=True, capture_output=True, timeout=60).stdout
    assert len(decoded) // 8 == round(seconds * rate)
    assert job["result"]["vocals"]["duration"] == pytest.approx(seconds, abs=1e-3)


def test_multipart_url_input_idempotency_and_results_with_range_etag_and_signed_urls(live: LiveGateway) -> None:
    audio = song(2.0, seed=30, rate=44100, channels=2)
    params = {"model": "htdemucs", "stems": ["drums", "no_drums"], "name": "form"}
    form: dict[str, Any] = {"file": ("song.wav", audio, "audio/wav"), "params": (None, json.dumps(params))}
    key = {"Idempotency-Key": "live-multipart-1"}
    first = requests.post(live.url + "/api/v1/jobs", files=form, headers={**live.headers(), **key}, timeout=60)
    job = created(first)
    repeat = requests.post(live.url + "/api/v1/jobs", files=form, headers={**live.headers(), **key}, timeout=60)
    assert repeat.status_code == 200 and repeat.json()["id"] == job["id"]  # the first job, not another
    by_json = submit(live, {"input": data(audio), **params}, **key)
    assert by_json.status_code == 200 and by_json.json()["id"] == job["id"]

    with origin({"/song.wav": song(3.0, seed=31)}) as server:
        fetched = live.finished(created(submit(live, {"input": {"url": server + "/song.wav"}}))["id"])
    assert fetched["status"] == "succeeded", fetched["error"]
    assert fetched["model"] == "htdemucs" and fetched["stems"] == ["drums", "bass", "other", "vocals"]
    assert fetched["output"] == {"format": "wav", "sample_rate": 44100, "channels": 2}
    assert fetched["input"]["duration"] == 3.0
    for stem in fetched["stems"]:
        check_stem(result(live, fetched["id"], stem).content, fetched["result"][stem], 3 * 44100, 44100, 2)

    done = live.finished(job["id"])
    assert done["status"] == "succeeded" and done["name"] == "form", done["error"]
    whole = result(live, job["id"], "drums")
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "audio/wav"
    assert int(whole.headers["Content-Length"]) == len(whole.content) == done["result"]["drums"]["size"]
    check_stem(whole.content, done["result"]["drums"], 2 * 44100, 44100, 2)
    etag = whole.headers["ETag"]
    assert etag
    part = result(live, job["id"], "drums", Range="bytes=100-1123")
    assert part.status_code == 206 and part.content == whole.content[100:1124]
    assert part.headers["Content-Range"] == f"bytes 100-1123/{len(whole.content)}"
    assert result(live, job["id"], "drums", **{"If-None-Match": etag}).status_code == 304
    refused(result(live, job["id"], "vocals"), 404, 40400002)  # not a stem this job asked for

    signed = done["result"]["no_drums"]["url"]
    anonymous = requests.get(signed, timeout=30)  # no Authorization
    assert anonymous.status_code == 200
    check_stem(anonymous.content, done["result"]["no_drums"], 2 * 44100, 44100, 2)
    assert requests.get(signed, headers={"Range": "bytes=0-43"}, timeout=30).content == anonymous.content[:44]
    refused(requests.get(signed.replace("no_drums", "drums"), timeout=30), 403, 40300001)
    refused(requests.get(signed.split("?")[0], timeout=30), 401, 40200002)  # unsigned, no token


def test_list_filters_by_status_newest_first_and_pages_with_a_cursor(live: LiveGateway) -> None:
    ids = [created(submit(live, {"input": data(song(1.0, seed=40 + n)), "stems": ["vocals"]}))["id"]
           for n in range(3)]
    cancelled = requests.post(f"{live.url}/api/v1/jobs/{ids[2]}/cancel", headers=live.headers(), timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [live.finished(job_id)["status"] for job_id in ids] == ["succeeded", "succeeded", "cancelled"]

    def page(**query: Any) -> dict[str, Any]:
        response = requests.get(live.url + "/api/v1/jobs", params=query, headers=live.headers(), timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = page(status="succeeded", limit=1)
    assert [job["id"] for job in first["jobs"]] == [ids[1]] and first["next_cursor"]
    second = page(status="succeeded", limit=1, cursor=first["next_cursor"])
    assert [job["id"] for job in second["jobs"]] == [ids[0]]
    assert [job["id"] for job in page(status="cancelled")["jobs"]][:1] == [ids[2]]
    both = page(status="succeeded,cancelled", limit=3)
    assert [job["id"] for job in both["jobs"]] == ids[::-1] and both["jobs"][0]["status"] == "cancelled"
    everything, cursor = [], None
    while True:
        listed = page(limit=2, **({"cursor": cursor} if cursor else {}))
        everything += [job["id"] for job in listed["jobs"]]
        if not (cursor := listed["next_cursor"]):
            break
    assert everything[:3] == ids[::-1] and len(everything) == len(set(everything))
    refused(requests.get(live.url + "/api/v1/jobs?status=done", headers=live.headers(), timeout=30), 400, 40000022)


def test_webhooks_are_signed_and_a_failing_receiver_gets_the_event_once(live: LiveGateway, hooks: Receiver) -> None:
    hooks.failures["/hook"] = 2
    job = created(submit(live, {"input": data(song(1.0, seed=50)), "stems": ["vocals", "no_vocals"],
                                "webhook_url": hooks.at("/hook")}))
    assert live.finished(job["id"])["status"] == "succeeded"
    attempts = wait_for(lambda: len(hooks.received("/hook")) >= 3 and hooks.received("/hook"), 30,
                        "for three webhook attempts")
    time.sleep(2)  # room for a fourth attempt, were one coming (retries are 0.3 s apart)
    attempts = hooks.received("/hook")
    assert [item.answered for item in attempts] == [500, 500, 200]
    assert len({item.headers["Sami-Event-Id"] for item in attempts}) == 1
    delivered = attempts[-1]
    event = verify_webhook(delivered.headers, delivered.body, WEBHOOK_SECRET)
    assert event.id == delivered.headers["Sami-Event-Id"] and event.type == "job.succeeded"
    assert event.job is not None and event.job.id == job["id"] and event.job.succeeded
    for item in attempts:  # every attempt is signed
        assert verify_webhook(item.headers, item.body, WEBHOOK_SECRET).id == event.id
    tampered = delivered.body.replace(b'"succeeded"', b'"failed"', 1)
    assert tampered != delivered.body
    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivered.headers, tampered, WEBHOOK_SECRET)
    signature = delivered.headers["Sami-Signature"]
    forged = signature[:-4] + ("0000" if not signature.endswith("0000") else "1111")
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**delivered.headers, "Sami-Signature": forged}, delivered.body, WEBHOOK_SECRET)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(delivered.headers, delivered.body, "another-secret-0123456789")
    old = sign_webhook(delivered.body, WEBHOOK_SECRET, int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError):  # a genuine but replayed-late signature
        verify_webhook({"Sami-Signature": old}, delivered.body, WEBHOOK_SECRET)
    # The signed URLs in the webhook work without a token.
    assert event.job.result is not None
    url = event.job.result["vocals"].url
    assert url is not None
    fetched = requests.get(url, timeout=30)
    assert fetched.status_code == 200 and audio_of(fetched.content)[0].shape == (44100, 2)


def test_copy_results_to_puts_the_stem_to_the_callers_storage(live: LiveGateway, hooks: Receiver) -> None:
    target = hooks.at("/bucket/vocals.wav?X-Amz-Signature=abc")
    job = created(submit(live, {"input": data(song(1.5, seed=60)), "stems": ["vocals", "no_vocals"],
                                "output": {"sample_rate": 22050, "channels": 1},
                                "copy_results_to": {"vocals": target}}))
    done = live.finished(job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["vocals"] == {"copied_to": "custom storage"}
    puts = hooks.received("/bucket/vocals.wav?X-Amz-Signature=abc")
    assert [item.method for item in puts] == ["PUT"] and puts[0].headers["Content-Type"] == "audio/wav"
    samples, rate = audio_of(puts[0].body)
    assert samples.shape == (int(1.5 * 22050), 1) and rate == 22050
    refused(result(live, job["id"], "vocals"), 404, 40400002)  # not kept here
    kept = result(live, job["id"], "no_vocals")
    check_stem(kept.content, done["result"]["no_vocals"], int(1.5 * 22050), 22050, 1)
    refused(submit(live, {"input": data(b"x"), "stems": ["vocals"], "copy_results_to": {"drums": target}}),
            400, 40000022)  # a stem the job does not produce


def test_cancel_and_delete_mid_job_free_the_only_worker(live: LiveGateway, hooks: Receiver) -> None:
    """SAMI_JOB_WORKERS=1: a 10-minute job cancelled (then another deleted) while it runs; a short job
    behind each succeeds within seconds, and no model call of the dropped job runs after it."""
    before = live.metrics()
    long = created(submit(live, {"input": data(song(TEN_MINUTES, seed=70)), "stems": ["vocals"], "output": SMALL,
                                 "webhook_url": hooks.at("/cancelled")}))
    processing(live, long["id"])
    reading = requests.get(f"{live.url}/api/v1/jobs/{long['id']}/results/vocals", headers=live.headers(),
                           stream=True, timeout=30)  # a whole-song job's stem comes once written: never, here
    assert reading.status_code == 200 and reading.headers["Content-Type"] == "audio/wav"
    cancelled = requests.post(f"{live.url}/api/v1/jobs/{long['id']}/cancel", headers=live.headers(), timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # cut short: no end of the chunked body
        reading.content  # noqa: B018 - read to the end
    began = time.monotonic()
    short = live.finished(created(submit(live, {"input": data(song(1.0, seed=71)), "stems": ["vocals"]}))["id"], 60)
    assert short["status"] == "succeeded" and time.monotonic() - began < 20, short  # the whole song takes ~80 s
    assert dropped_since(live, before) < 10  # of the ~100 calls the whole song takes (the short job's included)
    again = requests.post(f"{live.url}/api/v1/jobs/{long['id']}/cancel", headers=live.headers(), timeout=30)
    assert again.json()["status"] == "cancelled" and again.json()["completed_at"] == cancelled.json()["completed_at"]
    assert again.json()["result"] is None and live.job(long["id"]).json()["status"] == "cancelled"
    hook = wait_for(lambda: hooks.received("/cancelled"), 30, "for the cancelled job's webhook")
    assert verify_webhook(hook[0].headers, hook[0].body, WEBHOOK_SECRET).type == "job.cancelled"

    before = live.metrics()
    doomed = created(submit(live, {"input": data(song(TEN_MINUTES, seed=72)), "stems": ["vocals"],
                                   "output": SMALL}))
    processing(live, doomed["id"])
    assert (live.data_dir / "blobs" / "inputs" / doomed["id"]).exists()
    stream = requests.get(f"{live.url}/api/v1/jobs/{doomed['id']}/events", headers=live.headers(), stream=True,
                          timeout=(10, 60))
    events: list[tuple[str, dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: events.extend(sse_events(stream)), daemon=True)
    reader.start()
    wait_for(lambda: events, 10, "for the first event")
    deleted = requests.delete(f"{live.url}/api/v1/jobs/{doomed['id']}", headers=live.headers(), timeout=30)
    assert deleted.status_code == 204 and not deleted.content
    reader.join(timeout=20)
    assert not reader.is_alive() and events[-1][0] == "status" and events[-1][1]["status"] == "cancelled", events
    refused(live.job(doomed["id"]), 404, 40400002)
    refused(requests.delete(f"{live.url}/api/v1/jobs/{doomed['id']}", headers=live.headers(), timeout=30),
            404, 40400002)
    assert not (live.data_dir / "blobs" / "inputs" / doomed["id"]).exists()
    began = time.monotonic()
    short = live.finished(created(submit(live, {"input": data(song(1.0, seed=73)), "stems": ["vocals"]}))["id"], 60)
    assert short["status"] == "succeeded" and time.monotonic() - began < 20, short
    assert dropped_since(live, before) < 10

def test_another_appkey_sees_404_everywhere_and_an_empty_list(live: LiveGateway) -> None:
    job = live.finished(created(submit(live, {"input": data(song(1.0, seed=80)), "stems": ["vocals"]}))["id"])
    slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30).json()
    requests.put(slot["upload_url"], data=song(1.0, seed=81), timeout=30).raise_for_status()
    other = live.headers(OTHER_APPKEY)
    base = f"{live.url}/api/v1/jobs/{job['id']}"
    refused(requests.get(base, headers=other, timeout=30), 404, 40400002)
    refused(requests.get(base + "?wait=1", headers=other, timeout=30), 404, 40400002)
    refused(requests.post(base + "/cancel", headers=other, timeout=30), 404, 40400002)
    refused(requests.delete(base, headers=other, timeout=30), 404, 40400002)
    refused(requests.get(base + "/results/vocals", headers=other, timeout=30), 404, 40400002)
    refused(requests.get(base + "/events", headers=other, timeout=30), 404, 40400002)
    listed = requests.get(live.url + "/api/v1/jobs", headers=other, timeout=30)
    assert listed.status_code == 200 and listed.json() == {"jobs": [], "next_cursor": None}
    refused(submit(live, {"input": {"upload_id": slot["upload_id"]}}, OTHER_APPKEY), 404, 40400002)
    refused(requests.get(base, timeout=30), 401, 40200002)  # and without a token, nothing at all
    still = live.job(job["id"]).json()
    assert still["status"] == "succeeded" and result(live, job["id"], "vocals").status_code == 200


def test_a_model_missing_from_the_store_is_refused_and_bad_audio_fails_like_invoke(live: LiveGateway) -> None:
    def newest() -> list[str]:
        listed = requests.get(live.url + "/api/v1/jobs?limit=5", headers=live.headers(), timeout=30).json()
        return [job["id"] for job in listed["jobs"]]

    before = newest()
    body = refused(submit(live, {"input": data(song(1.0, seed=90)), "model": "htdemucs_6s"}), 400, 40000022)
    assert "sami-gateway models fetch htdemucs_6s" in body["error"]["message"], body
    refused(submit(live, {"input": data(song(1.0, seed=90)), "stems": ["guitar"]}), 400, 40000022)
    refused(submit(live, {"input": data(song(1.0, seed=90)), "output": {"format": "ogg"}}), 400, 40000022)
    assert newest() == before  # no job was created

    failed = live.finished(created(submit(live, {"input": data(b"these bytes are no audio at all")}))["id"])
    assert failed["status"] == "failed" and failed["result"] is None, failed
    assert failed["error"]["status_code"] == 40000012 and failed["error"]["status_text"] == "IllegalData"
    refused(result(live, failed["id"], "vocals"), 409, 40900001)


def test_uploads_refuse_altered_urls_oversize_bodies_and_unfinished_uploads(live: LiveGateway) -> None:
    slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30).json()
    altered = slot["upload_url"].replace("signature=", "signature=0")
    refused(requests.put(altered, data=b"RIFF", timeout=30), 403, 40300001)
    refused(submit(live, {"input": {"upload_id": slot["upload_id"]}}), 409, 40900001)  # not PUT yet
    refused(requests.put(slot["upload_url"], data=b"\0" * (slot["max_bytes"] + 1), timeout=60), 413, 41300001)
    put = requests.put(slot["upload_url"], data=song(1.0, seed=91), timeout=30)
    assert put.status_code == 200, put.text
    refused(submit(live, {"input": {"upload_id": "upl_unknown"}}), 404, 40400002)
    jobs = [created(submit(live, {"input": {"upload_id": slot["upload_id"]}, "stems": [stem]}))["id"]
            for stem in ("vocals", "no_vocals")]  # an upload serves any number of jobs until it expires
    for job_id, stem in zip(jobs, ("vocals", "no_vocals"), strict=True):
        done = live.finished(job_id)
        assert done["status"] == "succeeded" and list(done["result"]) == [stem], done
        check_stem(result(live, job_id, stem).content, done["result"][stem], 44100, 44100, 2)


@pytest.fixture(scope="module")
def short_lived(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A gateway whose jobs expire 2 s after they end, uploads 2 s after their PUT, signed URLs after 2 s
    (and every SAMI model on htdemucs: one warm-up at start)."""
    gateway = start_gateway(model_store, tmp_path_factory.mktemp("short-lived"), SAMI_JOB_TTL="2",
                            SAMI_UPLOAD_TTL="2", SAMI_SIGNED_URL_TTL="2",
                            SAMI_MODEL_MAP="2track_vocal=htdemucs,2track_acc=htdemucs")
    yield gateway
    stop_gateway(gateway)


def test_expired_jobs_uploads_and_their_files_are_removed(short_lived: LiveGateway) -> None:
    live = short_lived
    unused = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30).json()
    filled = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30).json()
    assert requests.put(filled["upload_url"], data=song(1.0, seed=96), timeout=30).status_code == 200
    uploaded = live.data_dir / "blobs" / "uploads" / filled["upload_id"]
    assert uploaded.exists()
    job = created(submit(live, {"input": {"upload_id": filled["upload_id"]}, "stems": ["vocals", "no_vocals"]}))
    done = live.finished(job["id"])
    results = live.data_dir / "blobs" / "results" / job["id"]
    assert done["status"] == "succeeded" and done["expires_at"], done
    assert sorted(path.name for path in results.iterdir()) == ["no_vocals.wav", "vocals.wav"]
    signed = done["result"]["vocals"]["url"]
    wait_for(lambda: live.job(job["id"]).status_code == 404, 15, "for the job to expire")
    refused(live.job(job["id"]), 404, 40400002)
    # The sweeper forgets the job, then removes its files: they are gone a moment later.
    wait_for(lambda: not results.exists(), 5, "for the expired job's results to be removed")
    assert not (live.data_dir / "blobs" / "inputs" / job["id"]).exists()
    assert requests.get(signed, timeout=30).status_code in (403, 404)
    listed = requests.get(live.url + "/api/v1/jobs", headers=live.headers(), timeout=30).json()
    assert job["id"] not in [item["id"] for item in listed["jobs"]]
    # Uploads: an unused slot's URL has expired, a filled upload is gone with its file.
    wait_for(lambda: time.time() > url_expiry(unused["upload_url"]), 5, "for the upload URL to expire")
    body = refused(requests.put(unused["upload_url"], data=b"late", timeout=30), 403, 40300001)
    assert "expired" in body["error"]["message"]
    wait_for(lambda: not uploaded.exists(), 10, "for the expired upload's file to be removed")
    refused(submit(live, {"input": {"upload_id": filled["upload_id"]}}), 404, 40400002)


def test_an_expired_job_takes_its_stem_cache_entry_with_it(short_lived: LiveGateway) -> None:
    """README: jobs and their files are deleted SAMI_JOB_TTL after they end; the stems it cached too."""
    live = short_lived
    cache = live.data_dir / "stem-cache"
    before = {path.name for path in cache.iterdir()}
    job = live.finished(created(submit(live, {"input": data(song(1.0, seed=98)), "stems": ["vocals"]}))["id"])
    assert job["status"] == "succeeded" and job["cache_hit"] is False, job
    (entry,) = {path.name for path in cache.iterdir()} - before
    wait_for(lambda: live.job(job["id"]).status_code == 404, 15, "for the job to expire")
    wait_for(lambda: not (cache / entry).exists(), 5, "for the expired job's stem cache entry to be removed")
    assert live.job("job_unknown").status_code == 404 and live.metrics()  # the gateway still answers


def test_an_upload_url_works_until_the_expires_at_it_advertises(short_lived: LiveGateway) -> None:
    """JOBS_API.md: a PUT is refused after `expires_at` (403), so one just before it is accepted."""
    live = short_lived
    wait_for(lambda: 0.02 < time.time() % 1 < 0.1, 2, "for the start of a second", 0.005)
    slot = requests.post(live.url + "/api/v1/uploads", headers=live.headers(), timeout=30).json()
    expires = url_expiry(slot["upload_url"])
    assert slot["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    time.sleep(max(0.0, expires - 0.25 - time.time()))  # past the slot's own 2 s and a sweep, before the URL's
    assert time.time() < expires
    put = requests.put(slot["upload_url"], data=song(1.0, seed=97), timeout=30)
    assert put.status_code == 200, (
        f"a PUT {expires - time.time():.2f} s before the advertised expires_at ({slot['expires_at']}) was "
        f"answered {put.status_code}: {put.text}")
