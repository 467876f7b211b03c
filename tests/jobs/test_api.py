"""Every verb of the Jobs API over HTTP, against a stand-in namespace (no model)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import ClientPayloadError, FormData

from sami_gateway.jobs.sweeper import Sweeper
from sami_gateway.web.state import JOBS, STREAMS

from .conftest import MakeClient, bearer, data_input


async def submit(client: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await client.post("/api/v1/jobs", json=body, headers={**bearer(), **(headers or {})})


async def finished(client: Any, job_id: str, appkey: str = "k") -> dict[str, Any]:
    response = await client.get(f"/api/v1/jobs/{job_id}?wait=10", headers=bearer(appkey))
    assert response.status == 200
    job: dict[str, Any] = await response.json()
    return job


async def error_of(response: Any, http: int, code: int) -> dict[str, Any]:
    assert response.status == http, await response.text()
    body: dict[str, Any] = orjson.loads(await response.read())
    assert body["error"]["status_code"] == code, body
    assert set(body) == {"error", "request_id"} and body["error"]["message"]
    return body


async def test_a_job_runs_and_its_results_download(make_client: MakeClient) -> None:
    client, namespace = await make_client()
    response = await submit(client, {"input": data_input(b"Hello Song"), "name": "first", "metadata": {"a": 1}})
    assert response.status == 201
    job = await response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "processing") and job["stems"] == ["upper", "lower", "reversed"]
    done = await finished(client, job["id"])
    assert done["status"] == "succeeded" and done["progress"] == 100
    assert done["name"] == "first" and done["metadata"] == {"a": 1} and done["expires_at"]
    assert done["input"]["duration"] == 1.0 and namespace.runs == 1
    upper = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert upper.status == 200 and await upper.read() == b"HELLO SONG"
    assert upper.headers["ETag"] and upper.headers["Content-Length"] == "10"
    assert done["result"]["upper"]["size"] == 10
    ranged = await client.get(f"/api/v1/jobs/{job['id']}/results/reversed", headers={**bearer(), "Range": "bytes=0-3"})
    assert ranged.status == 206 and await ranged.read() == b"gnoS"
    signed = done["result"]["lower"]["url"]
    assert "signature=" in signed
    anonymous = await client.get(signed[signed.index("/api/"):])
    assert anonymous.status == 200 and await anonymous.read() == b"hello song"


async def test_a_signed_url_is_refused_when_altered(make_client: MakeClient) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input()})).json()
    done = await finished(client, job["id"])
    url = done["result"]["lower"]["url"]
    path = url[url.index("/api/"):]
    await error_of(await client.get(path.replace("/lower", "/upper")), 403, 40300001)
    await error_of(await client.get(path.replace("expires=", "expires=1")), 403, 40300001)
    await error_of(await client.get(f"/api/v1/jobs/{job['id']}/results/lower"), 401, 40200002)


async def test_another_appkey_sees_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input()})).json()
    for method, path in (("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/results/upper"),
                         ("GET", "/events")):
        response = await client.request(method, f"/api/v1/jobs/{job['id']}{path}", headers=bearer("other"))
        await error_of(response, 404, 40400002)
    listed = await (await client.get("/api/v1/jobs", headers=bearer("other"))).json()
    assert listed == {"jobs": [], "next_cursor": None}


async def processing(client: Any, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await (await client.get(f"/api/v1/jobs/{job_id}", headers=bearer())).json())["status"] == "queued":
        assert time.monotonic() < deadline, "the job did not start"
        await asyncio.sleep(0.05)


async def test_results_of_a_queued_job_conflict_of_a_cancelled_one_are_cut_short_and_cancel_frees_the_worker(
        make_client: MakeClient) -> None:
    client, namespace = await make_client(SAMI_JOB_WORKERS="1")
    slow = await (await submit(client, {"input": data_input(), "output": {"delay": 30}})).json()
    behind = await (await submit(client, {"input": data_input(), "output": {"delay": 30}})).json()
    await processing(client, slow["id"])
    await error_of(await client.get(f"/api/v1/jobs/{behind['id']}/results/upper", headers=bearer()), 409, 40900001)
    # a job that is processing answers at once, and sends the stem as it comes (this one writes it at its end)
    reading = await client.get(f"/api/v1/jobs/{slow['id']}/results/upper", headers=bearer())
    assert reading.status == 200 and reading.headers["Transfer-Encoding"] == "chunked"
    assert reading.headers["Cache-Control"] == "no-store"
    await error_of(await client.get(f"/api/v1/jobs/{slow['id']}/results/drums", headers=bearer()), 404, 40400002)
    for job in (slow, behind):
        cancelled = await (await client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer())).json()
        assert cancelled["status"] == "cancelled"
    with pytest.raises(ClientPayloadError):  # no end of the chunked body: the stem was never finished
        await asyncio.wait_for(reading.read(), 10)
    quick = await (await submit(client, {"input": data_input(), "stems": ["upper"]})).json()
    assert (await finished(client, quick["id"]))["status"] == "succeeded"  # the one worker was freed
    again = await (await client.post(f"/api/v1/jobs/{slow['id']}/cancel", headers=bearer())).json()
    assert again["status"] == "cancelled" and again["completed_at"] == cancelled["completed_at"]


async def test_delete_removes_the_job_and_its_files(make_client: MakeClient, tmp_path: Any) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input()})).json()
    await finished(client, job["id"])
    assert list((tmp_path / "data" / "blobs" / "results").iterdir())
    response = await client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer())
    assert response.status == 204
    await error_of(await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer()), 404, 40400002)
    assert not list((tmp_path / "data" / "blobs" / "results").iterdir())
    assert not list((tmp_path / "data" / "blobs" / "inputs").iterdir())


async def test_delete_has_the_namespace_forget_the_job_once_its_owner_deletes_it(make_client: MakeClient) -> None:
    client, namespace = await make_client()
    job = await (await submit(client, {"input": data_input()})).json()
    await finished(client, job["id"])
    await error_of(await client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer("other")), 404, 40400002)
    assert namespace.forgotten == []  # another appkey's DELETE touches nothing
    assert (await client.delete(f"/api/v1/jobs/{job['id']}", headers=bearer())).status == 204
    assert namespace.forgotten == [("k", job["id"])]
    assert (await submit(client, {"input": data_input()})).status == 201  # and it goes on serving


async def test_a_bad_input_fails_the_job_with_invokes_code(make_client: MakeClient) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input(b"fail: not audio")})).json()
    done = await finished(client, job["id"])
    assert done["status"] == "failed" and done["result"] is None
    assert done["error"] == {"status_code": 40000012, "status_text": "IllegalData", "message": "not audio"}


async def test_requests_that_can_never_succeed_are_refused(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_WEBHOOK_SECRET="")
    await error_of(await submit(client, {}), 400, 40000023)
    await error_of(await submit(client, {"input": {"url": "ftp://x/y"}}), 400, 40000022)
    await error_of(await submit(client, {"input": {"data": "not base64!"}}), 400, 40000010)
    await error_of(await submit(client, {"input": data_input(), "stems": ["drums"]}), 400, 40000022)
    await error_of(await submit(client, {"input": data_input(), "colour": "red"}), 400, 40000022)
    await error_of(await submit(client, {"input": data_input(), "name": "x" * 201}), 400, 40000022)
    await error_of(await submit(client, {"input": data_input(), "metadata": {"x": "y" * 5000}}), 400, 40000022)
    await error_of(await submit(client, {"input": data_input(), "webhook_url": "http://127.0.0.1:1/h"}),
                   400, 40000022)  # no secret configured to sign it with
    await error_of(await submit(client, {"input": data_input(), "stems": ["upper"],
                                         "copy_results_to": {"lower": "http://127.0.0.1:1/x"}}), 400, 40000022)
    await error_of(await client.post("/api/v1/jobs", data=b"x", headers={**bearer(), "Content-Type": "text/plain"}),
                   415, 41500001)
    await error_of(await client.post("/api/v1/jobs", data=b"{", headers={**bearer(), "Content-Type":
                                                                          "application/json"}), 400, 40000020)
    await error_of(await client.post("/api/v1/jobs", json={"input": data_input()}), 401, 40200002)
    assert (await submit(client, {"input": data_input()})).status == 201  # still serving


async def test_list_filters_and_pages_newest_first(make_client: MakeClient) -> None:
    client, _ = await make_client()
    ids = [(await (await submit(client, {"input": data_input(), "name": str(n)})).json())["id"] for n in range(5)]
    for job_id in ids:
        await finished(client, job_id)
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(f"/api/v1/jobs?{query}", headers=bearer())).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    failed = await (await client.get("/api/v1/jobs?status=failed,cancelled", headers=bearer())).json()
    assert failed["jobs"] == []
    await error_of(await client.get("/api/v1/jobs?status=done", headers=bearer()), 400, 40000022)
    for listed in ("status=,", "status=succeeded,", "status=,failed"):  # an empty item: not a status
        await error_of(await client.get(f"/api/v1/jobs?{listed}", headers=bearer()), 400, 40000022)
    assert len((await (await client.get("/api/v1/jobs?status=", headers=bearer())).json())["jobs"]) == 5
    await error_of(await client.get("/api/v1/jobs?limit=0", headers=bearer()), 400, 40000022)
    await error_of(await client.get("/api/v1/jobs?cursor=%%%", headers=bearer()), 400, 40000022)
    for refused in ("__main__", "-1", "1e3", "\u0661", "1" * 19):  # not what the document's pattern allows
        await error_of(await client.get("/api/v1/jobs", params={"cursor": refused}, headers=bearer()), 400, 40000022)
    # Well formed, as the document says, is never refused: pages end before the cursor's job.
    page = await (await client.get("/api/v1/jobs?cursor=0", headers=bearer())).json()
    assert page == {"jobs": [], "next_cursor": None}
    page = await (await client.get("/api/v1/jobs?cursor=999999999999999999", headers=bearer())).json()
    assert [job["id"] for job in page["jobs"]] == ids[::-1]
    doubled = await client.get("/api/v1/jobs?status=succeeded,succeeded", headers=bearer())
    assert [job["id"] for job in (await doubled.json())["jobs"]] == ids[::-1]


async def test_an_idempotency_key_returns_the_first_job(make_client: MakeClient) -> None:
    client, namespace = await make_client()
    first = await submit(client, {"input": data_input()}, {"Idempotency-Key": "abc"})
    second = await submit(client, {"input": data_input()}, {"Idempotency-Key": "abc"})
    assert first.status == 201 and second.status == 200
    assert (await first.json())["id"] == (await second.json())["id"]
    other = await client.post("/api/v1/jobs", json={"input": data_input()},
                              headers={**bearer("other"), "Idempotency-Key": "abc"})
    assert other.status == 201  # keys are per appkey


async def test_uploads_then_a_job_from_the_upload(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_MAX_JOB_INPUT_BYTES="1000")
    created = await client.post("/api/v1/uploads", headers=bearer())
    assert created.status == 201
    upload = await created.json()
    assert upload["max_bytes"] == 1000 and upload["expires_at"].endswith("Z")
    path = upload["upload_url"][upload["upload_url"].index("/api/"):]
    await error_of(await client.put(path.replace("signature=", "signature=0"), data=b"abc"), 403, 40300001)
    put = await client.put(path, data=b"Uploaded Song")
    assert put.status == 200
    assert (await put.json())["size"] == 13
    await error_of(await client.put(path, data=b"again"), 409, 40900001)
    job = await (await submit(client, {"input": {"upload_id": upload["upload_id"]}})).json()
    assert (await finished(client, job["id"]))["status"] == "succeeded"
    big = await (await client.post("/api/v1/uploads", headers=bearer())).json()
    big_path = big["upload_url"][big["upload_url"].index("/api/"):]
    await error_of(await client.put(big_path, data=b"x" * 1001), 413, 41300001)
    await error_of(await submit(client, {"input": {"upload_id": big["upload_id"]}}), 409, 40900001)
    await error_of(await client.post("/api/v1/jobs", json={"input": {"upload_id": upload["upload_id"]}},
                                     headers=bearer("other")), 404, 40400002)


async def test_a_multipart_job(make_client: MakeClient) -> None:
    client, _ = await make_client()
    form = FormData()
    form.add_field("file", b"Form Song", filename="song.mp3", content_type="audio/mpeg")
    form.add_field("params", orjson.dumps({"stems": ["upper"]}).decode(), content_type="application/json")
    response = await client.post("/api/v1/jobs", data=form, headers=bearer())
    assert response.status == 201, await response.text()
    done = await finished(client, (await response.json())["id"])
    assert list(done["result"]) == ["upper"]
    body = await (await client.get(f"/api/v1/jobs/{done['id']}/results/upper", headers=bearer())).read()
    assert body == b"FORM SONG"


async def test_events_stream_status_and_progress_until_terminal(make_client: MakeClient) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input(), "output": {"delay": 0.2}})).json()
    response = await client.get(f"/api/v1/jobs/{job['id']}/events", headers=bearer())
    assert response.headers["Content-Type"] == "text/event-stream"
    text = (await asyncio.wait_for(response.read(), 10)).decode()
    events = [block for block in text.split("\n\n") if block.startswith("id:")]
    kinds = [block.split("\n")[1].removeprefix("event: ") for block in events]
    assert kinds[0] == "status" and kinds[-1] == "status" and "progress" in kinds
    last = orjson.loads(events[-1].split("data: ", 1)[1])
    assert last["status"] == "succeeded"
    progress = [orjson.loads(b.split("data: ", 1)[1]) for b in events if "event: progress" in b]
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    # each stem's seconds ready: the stand-in writes its stems one after another, each all at once
    seconds = len(b"Hello Song") / 10
    done = [[stem for stem in job["stems"] if p["ready"][stem] == seconds] for p in progress]
    assert all(p["ready"][stem] in (0.0, seconds) for p in progress for stem in job["stems"])
    assert all(written == job["stems"][:len(written)] for written in done) and done == sorted(done, key=len)
    assert last["ready"] is None  # only while processing


async def test_a_processing_job_shows_each_stems_seconds_ready(make_client: MakeClient) -> None:
    client, _ = await make_client()
    job = await (await submit(client, {"input": data_input(), "stems": ["upper", "lower"],
                                       "output": {"delay": 0.8}})).json()
    assert job["ready"] is None  # queued
    deadline = time.monotonic() + 10
    while (now := await (await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer())).json())["ready"] != \
            {"upper": len(b"Hello Song") / 10, "lower": 0.0}:
        assert now["status"] in ("queued", "processing") and time.monotonic() < deadline, now
        await asyncio.sleep(0.05)
    assert now["status"] == "processing"


async def test_queue_bounds_refuse_with_429_then_503(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_JOB_WORKERS="1", SAMI_MAX_QUEUED_JOBS_PER_APPKEY="2",
                                  SAMI_MAX_QUEUED_JOBS="3")
    slow = {"input": data_input(), "output": {"delay": 5}}
    first = await (await submit(client, slow)).json()
    await finished_processing(client, first["id"])
    for _ in range(2):
        assert (await submit(client, slow)).status == 201
    refused = await error_of(await submit(client, slow), 429, 42900001)
    assert refused["error"]["message"]
    assert (await client.post("/api/v1/jobs", json=slow, headers=bearer("other"))).status == 201
    response = await client.post("/api/v1/jobs", json=slow, headers=bearer("other"))
    await error_of(response, 503, 50300001)
    assert response.headers["Retry-After"]


async def finished_processing(client: Any, job_id: str) -> None:
    for _ in range(100):
        job = await (await client.get(f"/api/v1/jobs/{job_id}", headers=bearer())).json()
        if job["status"] == "processing":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not start")


@pytest.mark.parametrize("text", ["QR==", "QUJ=", "QUJDQR==", "QUJD====", "QU JD"])
async def test_input_data_is_decoded_as_strictly_as_invoke_data(make_client: MakeClient, text: str) -> None:
    """One decoder for both: "QR==" would silently become "QQ==" (a changed byte) if its padding
    bits were dropped, so invoke refuses it and so does a job."""
    client, _ = await make_client()
    body = await error_of(await submit(client, {"input": {"data": text}}), 400, 40000010)
    assert body["error"]["message"].startswith("input.data ")


async def test_malformed_bodies_are_400_and_the_service_keeps_serving(make_client: MakeClient) -> None:
    client, _ = await make_client()
    await error_of(await submit(client, {"input": {"data": "6\u00b4"}}), 400, 40000010)
    form = (b'--b\r\nContent-Disposition: form-data; name="fi\x7fle"\r\n\r\nx\r\n--b--\r\n')
    response = await client.post("/api/v1/jobs", data=form,
                                  headers={**bearer(), "Content-Type": "multipart/form-data; boundary=b"})
    assert response.status == 400
    assert (await submit(client, {"input": data_input()})).status == 201


async def test_metrics_count_transitions_uploads_and_the_queue(make_client: MakeClient) -> None:
    client, _ = await make_client()
    upload = await (await client.post("/api/v1/uploads", headers=bearer())).json()
    await client.put(upload["upload_url"][upload["upload_url"].index("/api/"):], data=b"Twelve bytes")
    job = await (await submit(client, {"input": {"upload_id": upload["upload_id"]}})).json()
    await finished(client, job["id"])
    failed = await (await submit(client, {"input": data_input(b"fail")})).json()
    await finished(client, failed["id"])
    text = await (await client.get("/metrics")).text()
    for line in ('sami_gateway_job_transitions_total{status="queued"} 2.0',
                 'sami_gateway_job_transitions_total{status="succeeded"} 1.0',
                 'sami_gateway_job_failures_total{status_code="40000012"} 1.0',
                 "sami_gateway_upload_bytes_total 12.0", "sami_gateway_jobs_oldest_queued_age_seconds",
                 'sami_gateway_audio_seconds_total{model="echo",namespace="Echo"} 1.2'):
        assert line in text, line


async def until(check: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_an_appkey_holds_16_streams_and_long_polls_then_429_until_one_ends(make_client: MakeClient) -> None:
    client, _ = await make_client(server={"handler_cancellation": True})
    slots = client.server.app[STREAMS]
    job = await (await submit(client, {"input": data_input(), "output": {"delay": 60}})).json()
    events = f"/api/v1/jobs/{job['id']}/events"
    streams = [await client.get(events, headers=bearer()) for _ in range(15)]
    assert all(stream.status == 200 for stream in streams)
    poll = asyncio.create_task(client.get(f"/api/v1/jobs/{job['id']}?wait=1", headers=bearer()))
    await until(lambda: slots.open("k") == 16)
    refused = await client.get(events, headers=bearer())
    body = await error_of(refused, 429, 42900001)
    assert refused.headers["Retry-After"] == "5"
    assert "at most 16 event streams and long polls" in body["error"]["message"]
    await error_of(await client.get(f"/api/v1/jobs/{job['id']}?wait=5", headers=bearer()), 429, 42900001)
    assert (await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer())).status == 200  # no wait: no slot
    other_job = await (await submit(client, {"input": data_input(), "output": {"delay": 60}},
                                    bearer("other"))).json()
    other = await client.get(f"/api/v1/jobs/{other_job['id']}/events", headers=bearer("other"))
    assert other.status == 200 and other.headers["Content-Type"] == "text/event-stream"
    assert (await poll).status == 200  # the long poll ended after its second: its slot is free
    streams.append(await client.get(events, headers=bearer()))
    assert streams[-1].status == 200
    await error_of(await client.get(events, headers=bearer()), 429, 42900001)
    streams.pop(0).close()  # the client goes: its slot is free once the gateway sees it
    await until(lambda: slots.open("k") == 15)
    streams.append(await client.get(events, headers=bearer()))
    assert streams[-1].status == 200
    for response in [*streams, other]:
        response.close()
    await until(lambda: slots.open("k") == slots.open("other") == 0)


def params_form(head: bytes = b"") -> bytes:
    return b'--b\r\nContent-Disposition: form-data; name="params"\r\n\r\n' + head


FORM = {"Content-Type": "multipart/form-data; boundary=b"}


async def test_a_huge_params_part_is_refused_before_the_gateway_reads_it(make_client: MakeClient) -> None:
    client, _ = await make_client()
    total, answered, sent = 50 * 1024 * 1024, asyncio.Event(), [0]

    async def body() -> Any:
        yield params_form()
        while sent[0] < total and not answered.is_set():
            if sent[0] == 1024 * 1024:  # a MiB is well past the limit: wait for the answer, sending the
                await asyncio.wait([asyncio.create_task(answered.wait())], timeout=5)  # rest if none comes
            yield b" " * 65536
            sent[0] += 65536

    started = asyncio.get_running_loop().time()
    response = await client.post("/api/v1/jobs", data=body(), headers={**bearer(), **FORM})
    answered.set()
    assert sent[0] < total  # answered while most of the part was still unsent
    assert asyncio.get_running_loop().time() - started < 4
    refused = await error_of(response, 400, 40000022)
    assert "params larger than 65536 bytes" in refused["error"]["message"]
    assert response.headers["Connection"] == "close"
    assert (await submit(client, {"input": data_input()})).status == 201  # still serving


async def test_a_params_part_that_trickles_past_the_body_timeout_is_408(make_client: MakeClient) -> None:
    client, _ = await make_client(SAMI_BODY_TIMEOUT="1", SAMI_MAX_JOB_INPUT_BYTES="1000")

    async def body() -> Any:
        yield params_form(b"{")
        for _ in range(40):  # 8 s, one byte at a time
            await asyncio.sleep(0.2)
            yield b" "
        yield b"}\r\n--b--\r\n"

    started = asyncio.get_running_loop().time()
    response = await client.post("/api/v1/jobs", data=body(), headers={**bearer(), **FORM})
    assert asyncio.get_running_loop().time() - started < 4
    await error_of(response, 408, 40800001)
    assert response.headers["Connection"] == "close"
    assert (await submit(client, {"input": data_input()})).status == 201  # still serving


async def raw_submit(client: Any, key: bytes, body: bytes = b'{"input": {"url": "http://127.0.0.1:1/x"}}') -> bytes:
    """POST a job with `key` as the Idempotency-Key's raw bytes (a client library would refuse them)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"POST /api/v1/jobs HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
                     + b"Authorization: " + bearer()["Authorization"].encode() + b"\r\nIdempotency-Key: " + key
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def idempotency_is_kept_per_request(client: Any) -> None:
    """The same key and request: the first job (200); another request: 422; a key not printable
    ASCII: 400; and the gateway keeps serving."""
    key = {"Idempotency-Key": "order-1"}
    request = {"input": data_input(b"first song"), "name": "a", "metadata": {"x": 1, "y": 2}}
    first = await submit(client, request, key)
    assert first.status == 201, await first.text()
    job = await first.json()
    again = await submit(client, {"metadata": {"y": 2, "x": 1}, "name": "a", "input": data_input(b"first song")}, key)
    assert again.status == 200 and (await again.json())["id"] == job["id"]  # the same request, keys reordered
    for other in ({**request, "input": data_input(b"other song")}, {**request, "name": "b"},
                  {**request, "stems": ["upper"]}, {**request, "metadata": {"x": 1}},
                  {"input": {"url": "http://127.0.0.1:1/x"}}):
        refused = await error_of(await submit(client, other, key), 422, 42200001)
        assert refused["error"]["status_text"] == "IdempotencyMismatch"
        assert job["id"] in refused["error"]["message"]
    form_key = {"Idempotency-Key": "form-1"}

    def form(content: bytes) -> FormData:
        made = FormData()
        made.add_field("file", content, filename="song.mp3", content_type="audio/mpeg")
        made.add_field("params", '{"stems": ["upper"]}', content_type="application/json")
        return made

    posted = await client.post("/api/v1/jobs", data=form(b"Form Song"), headers={**bearer(), **form_key})
    assert posted.status == 201, await posted.text()
    repeat = await client.post("/api/v1/jobs", data=form(b"Form Song"), headers={**bearer(), **form_key})
    assert repeat.status == 200 and (await repeat.json())["id"] == (await posted.json())["id"]
    await error_of(await client.post("/api/v1/jobs", data=form(b"Other Song"), headers={**bearer(), **form_key}),
                   422, 42200001)
    as_data = await submit(client, {"input": data_input(b"Form Song"), "stems": ["upper"]}, form_key)
    assert as_data.status == 200 and (await as_data.json())["id"] == (await posted.json())["id"]  # the same bytes
    upload_key = {"Idempotency-Key": "upload-1"}
    ids = []
    for content in (b"Uploaded Song", b"Uploaded Song", b"Other Song"):  # a retry uploads its file again
        upload = await (await client.post("/api/v1/uploads", headers=bearer())).json()
        put = await client.put(upload["upload_url"][upload["upload_url"].index("/api/"):], data=content)
        assert put.status == 200
        ids.append(upload["upload_id"])
    by_upload = await submit(client, {"input": {"upload_id": ids[0]}}, upload_key)
    assert by_upload.status == 201
    same_bytes = await submit(client, {"input": {"upload_id": ids[1]}}, upload_key)
    assert same_bytes.status == 200 and (await same_bytes.json())["id"] == (await by_upload.json())["id"]
    await error_of(await submit(client, {"input": {"upload_id": ids[2]}}, upload_key), 422, 42200001)
    for bad in ("caf\u00e9".encode(), b"\xff\xfe", b"tab\there"):  # (aiohttp refuses control bytes itself)
        answer = await raw_submit(client, bad)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert b'"status_code":40000022' in answer and b"printable ASCII" in answer, answer
    assert (await submit(client, {"input": data_input()}, {"Idempotency-Key": " ~!-printable-ASCII"})).status == 201
    assert (await submit(client, request, key)).status == 200  # still serving, the first job still named


async def test_an_idempotency_key_names_one_request(make_client: MakeClient) -> None:
    client, _ = await make_client()
    await idempotency_is_kept_per_request(client)


async def two_puts_to_one_upload(client: Any) -> tuple[str, bytes]:
    """A slow PUT (its body trickles) and a fast one to one upload URL: the fast one wins, the slow
    one is 409 and its bytes never reach the upload. (upload id, the bytes stored)."""
    upload = await (await client.post("/api/v1/uploads", headers=bearer())).json()
    path = upload["upload_url"][upload["upload_url"].index("/api/"):]
    begun, release = asyncio.Event(), asyncio.Event()

    async def trickle() -> Any:
        yield b"Slow Song, its first half "
        begun.set()
        await release.wait()
        yield b"and its second, sent after the fast PUT was answered"

    slow = asyncio.create_task(client.put(path, data=trickle()))
    await asyncio.wait_for(begun.wait(), 10)
    await asyncio.sleep(0.3)  # the slow PUT is past its checks, streaming
    fast = b"Fast Song"
    won = await client.put(path, data=fast)
    assert won.status == 200, await won.text()
    assert await won.json() == {"upload_id": upload["upload_id"], "size": len(fast),
                                "sha256": hashlib.sha256(fast).hexdigest()}
    release.set()
    refused = await error_of(await asyncio.wait_for(slow, 10), 409, 40900001)
    assert "already been PUT" in refused["error"]["message"]
    jobs = client.app[JOBS]
    stored = bytes(await jobs.blobs.read(f"uploads/{upload['upload_id']}"))
    recorded = await jobs.store.get_upload(upload["upload_id"])
    assert stored == fast
    assert (recorded.size, recorded.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert await jobs.blobs.folders("uploads") == {upload["upload_id"]}  # the refused PUT's file is gone
    return upload["upload_id"], stored


async def test_of_two_puts_to_one_upload_the_refused_one_leaves_no_byte(make_client: MakeClient,
                                                                        tmp_path: Any) -> None:
    client, _ = await make_client()
    upload_id, stored = await two_puts_to_one_upload(client)
    assert not list((tmp_path / "data" / "tmp").glob("part-*"))
    job = await (await submit(client, {"input": {"upload_id": upload_id}, "stems": ["upper"]})).json()
    assert (await finished(client, job["id"]))["status"] == "succeeded"
    result = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert await result.read() == stored.upper()  # the job was made from the winner's bytes


async def test_an_upload_claimed_by_a_put_that_died_before_its_move_is_forgotten_at_start(
        make_client: MakeClient) -> None:
    client, _ = await make_client()
    jobs = client.app[JOBS]
    kept = await (await client.post("/api/v1/uploads", headers=bearer())).json()
    assert (await client.put(kept["upload_url"][kept["upload_url"].index("/api/"):], data=b"Kept")).status == 200
    lost = await (await client.post("/api/v1/uploads", headers=bearer())).json()
    # What the process leaves when it dies between the claim and the move: the upload completed in the
    # store, its bytes under the PUT's private name only.
    upload = await jobs.store.get_upload(lost["upload_id"])
    assert await jobs.store.complete_upload(replace(upload, completed_at=time.time(), size=4, sha256="0" * 64))
    await jobs.blobs.put_bytes(f"uploads/{lost['upload_id']}.put-0123", b"Lost")
    assert await Sweeper(jobs).sweep_orphans() == 2  # what a start does first
    assert await jobs.blobs.folders("uploads") == {kept["upload_id"]}
    await error_of(await client.put(lost["upload_url"][lost["upload_url"].index("/api/"):], data=b"again"),
                   404, 40400002)  # the client makes a new upload
    await error_of(await submit(client, {"input": {"upload_id": lost["upload_id"]}}), 404, 40400002)
    assert (await submit(client, {"input": {"upload_id": kept["upload_id"]}})).status == 201


async def test_a_fault_in_publishing_a_stem_ends_the_publishing_not_the_job(
        make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part that cannot be published for a reason other than storage (a fault of ours) stops the
    publishing of that run: the job succeeds, and its reader gets the stem whole once it has."""
    from sami_gateway.jobs import growing

    monkeypatch.setattr(growing, "PART_BYTES", PART_BYTES := 64 * 1024)
    client, _ = await make_client()
    published: list[str] = []

    async def faulty(key: str, data: bytes) -> None:
        published.append(key)
        raise RuntimeError("a fault in publishing")
    monkeypatch.setattr(client.server.app[JOBS].blobs, "put_part", faulty)
    content = bytes(np.random.default_rng(4).integers(97, 123, 4 * PART_BYTES + 99, dtype=np.uint8))
    job = await (await submit(client, {"input": data_input(content), "stems": ["upper"],  # written over 2.7 s
                                       "output": {"delay": 0.3, "grow": PART_BYTES // 2}})).json()
    await processing(client, job["id"])
    reading = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert reading.status == 200
    assert await asyncio.wait_for(reading.read(), 30) == content.upper()
    assert (await finished(client, job["id"]))["status"] == "succeeded"
    assert len(published) == 1  # the first part was tried, and nothing after it


async def test_a_stem_is_read_as_it_is_written_and_ends_as_the_finished_file(
        make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole parts of a stem being written are readable while its job runs; the rest, once it has
    succeeded, comes from the finished file: the bytes read equal the file downloaded after."""
    from sami_gateway.jobs import growing

    monkeypatch.setattr(growing, "PART_BYTES", PART_BYTES := 64 * 1024)
    client, _ = await make_client()
    content = bytes(np.random.default_rng(3).integers(97, 123, 3 * PART_BYTES + 12345, dtype=np.uint8))
    job = await (await submit(client, {"input": data_input(content), "stems": ["upper", "reversed"],
                                       "output": {"delay": 0.2, "grow": PART_BYTES // 4}})).json()
    await processing(client, job["id"])
    reading = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert reading.status == 200 and reading.headers["Content-Type"] == "application/octet-stream"
    first = await asyncio.wait_for(reading.content.readexactly(PART_BYTES), 20)
    status = (await (await client.get(f"/api/v1/jobs/{job['id']}", headers=bearer())).json())["status"]
    assert status == "processing"  # the first part came while the job still wrote the stems
    streamed = first + await asyncio.wait_for(reading.read(), 30)
    assert streamed == content.upper()
    done = await finished(client, job["id"])
    assert done["status"] == "succeeded"
    whole = await client.get(f"/api/v1/jobs/{job['id']}/results/upper", headers=bearer())
    assert await whole.read() == streamed and whole.headers["Content-Length"] == str(len(content))
    parts = Path(client.server.app[JOBS].blobs.local_path(f"results/{job['id']}/upper.txt") or "").parent
    for _ in range(100):  # the parts are deleted just after the job is seen to have ended
        if not (parts / "partial").exists():
            break
        await asyncio.sleep(0.05)
    assert not (parts / "partial").exists()  # the parts are gone once the job has ended
