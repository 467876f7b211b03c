"""The Jobs API through the SDK, against the fake gateway: submit, upload, get, wait, list, events, download."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from sami_client import (
    AsyncSamiClient,
    Job,
    JobNotSucceeded,
    SamiClient,
    SamiClientError,
    WaitTimeout,
)

from .fake_gateway import TOKEN, FakeGateway

STEMS: dict[str, bytes | None] = {"vocals": b"RIFF-vocals" * 100, "no_vocals": b"RIFF-rest" * 50, "drums": None}


def sent_body(fake: FakeGateway) -> dict[str, object]:
    body: dict[str, object] = json.loads(fake.requests_to("POST", "/api/v1/jobs")[-1].body)
    return body


def test_submit_a_url_with_options(fake: FakeGateway, client: SamiClient) -> None:
    job = client.submit("https://example.com/song.mp3", model="htdemucs_ft", stems="vocals, no_vocals",
                        output="flac", name="song", metadata={"k": 1}, webhook_url="https://hook.example/x",
                        copy_results_to={"drums": "https://bucket.example/put"})
    assert job.id == "job-1" and job.status == "queued" and not job.is_terminal
    assert sent_body(fake) == {"input": {"url": "https://example.com/song.mp3"}, "model": "htdemucs_ft",
                               "stems": ["vocals", "no_vocals"], "output": {"format": "flac"}, "name": "song",
                               "metadata": {"k": 1}, "webhook_url": "https://hook.example/x",
                               "copy_results_to": {"drums": "https://bucket.example/put"}}
    assert fake.requests_to("POST", "/api/v1/jobs")[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_submit_data_upload_id_or_the_input_object(fake: FakeGateway, client: SamiClient) -> None:
    client.submit(data=b"\x00\x01")
    assert sent_body(fake) == {"input": {"data": base64.b64encode(b"\x00\x01").decode()}}
    client.submit(upload_id="upl-7")
    assert sent_body(fake) == {"input": {"upload_id": "upl-7"}}
    client.submit({"url": "https://example.com/a.wav"}, stems=["vocals"])
    assert sent_body(fake) == {"input": {"url": "https://example.com/a.wav"}, "stems": ["vocals"]}
    with pytest.raises(ValueError, match="exactly one"):
        client.submit(url="https://example.com/a.wav", data=b"x")
    with pytest.raises(ValueError, match="exactly one"):
        client.submit()


def test_submit_a_file_uploads_it_first_streamed_without_the_token(fake: FakeGateway, client: SamiClient,
                                                                   tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(bytes(range(256)) * 5000)  # over one streamed chunk
    job = client.submit(file=song)
    assert sent_body(fake) == {"input": {"upload_id": "upl-1"}} and job.id == "job-1"
    assert fake.uploads["upl-1"] == song.read_bytes()
    put = fake.requests_to("PUT", "/upload-put/upl-1")[0]
    assert "Authorization" not in put.headers and put.headers["Content-Length"] == str(song.stat().st_size)
    assert client.submit(str(song)).id == "job-2"  # a path as the positional input


def test_an_upload_larger_than_max_bytes_is_refused_before_sending(fake: FakeGateway, client: SamiClient,
                                                                   tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * ((1 << 22) + 1))
    with pytest.raises(SamiClientError, match="more than"):
        client.upload_file(big)
    assert not fake.requests_to("PUT", "/upload-put/upl-1")


def test_get_with_wait_is_a_long_poll(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1")
    assert client.get("job-1", wait=90).succeeded
    assert fake.requests_to("GET", "/api/v1/jobs/job-1")[0].query == {"wait": "60"}  # capped at the contract's 60


def test_wait_reports_progress_until_the_job_ends(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1", "queued")
    fake.polls_until_done["job-1"] = 3
    seen: list[tuple[str, float]] = []
    job = client.wait("job-1", timeout=30, poll=1, on_progress=lambda j: seen.append((j.status, j.progress)))
    assert job.succeeded and job.is_terminal
    assert seen == [("processing", 25.0), ("processing", 50.0), ("succeeded", 100.0)]
    assert all(seen.query == {"wait": "1"} for seen in fake.requests_to("GET", "/api/v1/jobs/job-1"))


def test_wait_gives_up_after_its_timeout(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1", "processing")
    with pytest.raises(WaitTimeout) as late:
        client.wait("job-1", timeout=1.5, poll=1)
    assert isinstance(late.value.job, Job) and late.value.job.status == "processing"


def test_list_and_iter_jobs(fake: FakeGateway, client: SamiClient) -> None:
    for number in range(5):
        fake.add_job(f"job-{number}", "succeeded" if number % 2 else "failed")
    page = client.list(status=["succeeded"], limit=1)
    assert [job.id for job in page.jobs] == ["job-3"] and page.next_cursor == "1"
    assert fake.calls[-1].query == {"status": "succeeded", "limit": "1"}
    assert [job.id for job in client.iter_jobs(page_size=2)] == [f"job-{n}" for n in (4, 3, 2, 1, 0)]
    assert [job.id for job in client.iter_jobs("failed,succeeded", page_size=10)] == [f"job-{n}" for n in
                                                                                     (4, 3, 2, 1, 0)]


def test_events_stream_until_the_terminal_status(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1", "processing")
    fake.events["job-1"] = [("status", {"id": "job-1", "status": "processing", "progress": 0}),
                            ("progress", {"id": "job-1", "progress": 40.5}),
                            ("status", {"id": "job-1", "status": "succeeded", "progress": 100}),
                            ("progress", {"id": "job-1", "progress": 100})]
    events = list(client.events("job-1"))
    assert [(e.event, e.status, e.progress) for e in events] == [
        ("status", "processing", 0.0), ("progress", None, 40.5), ("status", "succeeded", 100.0)]
    assert events[-1].is_terminal and events[1].id == "2"


def test_cancel_and_delete(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1", "queued")
    assert client.cancel("job-1").status == "cancelled"
    assert client.cancel(client.get("job-1")).status == "cancelled"  # a Job is as good as its id
    client.delete("job-1")
    assert "job-1" not in fake.jobs


def check_download(folder: Path, written: dict[str, Path], job_id: str = "job-1") -> None:
    assert set(written) == {"vocals", "no_vocals"}
    assert (folder / "vocals.wav").read_bytes() == STEMS["vocals"]
    assert (folder / "no_vocals.wav").read_bytes() == STEMS["no_vocals"]
    assert not (folder / "drums.wav").exists() and not list(folder.glob("*.part"))
    manifest = json.loads((folder / "results.json").read_text())
    assert manifest["id"] == job_id and manifest["status"] == "succeeded"
    assert manifest["results"]["drums"] == {"copied_to": "custom storage"}
    vocals = manifest["results"]["vocals"]
    assert vocals["file"] == "vocals.wav" and vocals["size"] == len(STEMS["vocals"] or b"")
    assert vocals["sha256"] == hashlib.sha256(STEMS["vocals"] or b"").hexdigest()


def test_download_writes_the_files_and_results_json(fake: FakeGateway, client: SamiClient, tmp_path: Path) -> None:
    fake.add_job("job-1", stems=STEMS)
    written = client.download("job-1", tmp_path / "out")
    check_download(tmp_path / "out", written)
    routes = {seen.path for seen in fake.calls}
    assert "/api/v1/jobs/job-1/results/vocals" in routes and "/api/v1/jobs/job-1/results/drums" not in routes


def test_download_without_a_token_uses_the_signed_urls(fake: FakeGateway, client: SamiClient,
                                                       tmp_path: Path) -> None:
    fake.add_job("job-1", stems=STEMS)
    job = client.get("job-1")
    with SamiClient(fake.url) as anonymous:
        check_download(tmp_path, anonymous.download(job, tmp_path))
    assert fake.requests_to("GET", "/signed/job-1/vocals")


def test_a_corrupt_download_is_not_left_in_place(fake: FakeGateway, client: SamiClient, tmp_path: Path) -> None:
    fake.add_job("job-1", stems={"vocals": b"good bytes"})
    fake.files[("job-1", "vocals")] = b"evil bytes"
    with pytest.raises(SamiClientError, match="sha256"):
        client.download("job-1", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_of_an_unfinished_job_is_refused(fake: FakeGateway, client: SamiClient, tmp_path: Path) -> None:
    fake.add_job("job-1", "processing")
    with pytest.raises(JobNotSucceeded) as refused:
        client.download("job-1", tmp_path)
    assert refused.value.job.status == "processing"


def test_download_result_of_one_stem(fake: FakeGateway, client: SamiClient, tmp_path: Path) -> None:
    fake.add_job("job-1", stems=STEMS)
    path = client.download_result("job-1", "vocals", tmp_path / "deep" / "v.wav")
    assert path.read_bytes() == STEMS["vocals"]


async def test_the_async_client_has_the_same_verbs(fake: FakeGateway, aclient: AsyncSamiClient,
                                                   tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF" * 300_000)
    job = await aclient.submit(file=song, stems=["vocals"])
    assert fake.uploads["upl-1"] == song.read_bytes() and job.id == "job-1"
    fake.add_job("job-2", "queued", stems=STEMS)
    fake.polls_until_done["job-2"] = 2
    progress: list[float] = []
    done = await aclient.wait("job-2", poll=1, on_progress=lambda j: progress.append(j.progress))
    assert done.succeeded and progress == [25.0, 100.0]
    check_download(tmp_path / "out", await aclient.download(done, tmp_path / "out"), "job-2")
    assert [j.id async for j in aclient.iter_jobs(page_size=1)] == ["job-2", "job-1"]
    fake.events["job-2"] = [("status", {"status": "succeeded"})]
    assert [e.status async for e in aclient.events("job-2")] == ["succeeded"]
    assert (await aclient.cancel("job-1")).status == "cancelled"
    await aclient.delete("job-1")
    assert (await aclient.list()).jobs[0].id == "job-2"
    result = await aclient.invoke("app", data=b"abc", payload={"model": "2track_vocal"})
    assert result.data == b"abc" and result.payload == {"model": "2track_vocal"} and result.task_id == "t-1"
