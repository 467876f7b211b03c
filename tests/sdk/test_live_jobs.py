"""The SDK (`SamiClient` and `AsyncSamiClient`) against a live `sami-gateway serve` running the real
MusicSourceSeparate namespace on the tiny demo models: GetToken, invoke, uploads, and every verb of
the Jobs API, with the downloaded files decoded."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import islice
from pathlib import Path

import pytest
import requests
import soundfile as sf
from sami_client import (
    AsyncSamiClient,
    BadRequest,
    Conflict,
    JobNotSucceeded,
    NotFound,
    SamiClient,
    Unauthorized,
    WaitTimeout,
    verify_webhook,
)

from tests.conftest import ACCESS_KEY, APPKEY, SECRET_KEY
from tests.jobs.live import (
    OTHER_APPKEY,
    SONG_RATE,
    WEBHOOK_SECRET,
    LiveGateway,
    Receiver,
    audio_of,
    song,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
SMALL = {"format": "wav", "sample_rate": SONG_RATE, "channels": 1}




def decoded(path: Path) -> tuple[int, int, int]:
    """(frames, rate, channels) of an audio file."""
    info = sf.info(str(path))
    return info.frames, info.samplerate, info.channels


def test_the_sync_client_drives_every_verb(live: LiveGateway, tmp_path: Path) -> None:
    source = tmp_path / "song.wav"
    source.write_bytes(song(20.0, seed=5200))
    with SamiClient(live.url, timeout=30) as client:
        token = client.get_token(ACCESS_KEY, SECRET_KEY, APPKEY, expiration=600)
        assert client.token == token
        answer = client.invoke(APPKEY, data=song(1.0, seed=5201, rate=44100, channels=2),
                               payload={"model": "2track_vocal"})
        samples, rate = audio_of(answer.data)
        assert samples.shape == (44100, 1) and rate == 44100 and answer.payload["cache_hit"] is False

        upload_id = client.upload_file(source)
        job = client.submit(upload_id=upload_id, model="htdemucs", stems=["vocals", "no_vocals"], name="sdk sync",
                            metadata={"via": "sdk"})
        assert job.status in ("queued", "processing") and job.stems == ("vocals", "no_vocals")
        events = list(client.events(job.id))
        assert events[0].event == "status" and events[-1].event == "status" and events[-1].status == "succeeded"
        progress = [event.progress for event in events if event.event == "progress"]
        assert progress and progress == sorted(progress), [(event.event, event.status) for event in events]
        ready = [event.ready for event in events if event.event == "progress"]  # whole-song: each stem once written
        assert all(r is not None and set(r) == {"vocals", "no_vocals"} for r in ready), ready
        assert {seconds for r in ready if r for seconds in r.values()} <= {0.0, 20.0}
        changes: list[str] = []
        job = client.wait(job.id, timeout=60, poll=5, on_progress=lambda seen: changes.append(seen.status))
        assert job.succeeded and changes == ["succeeded"] and job.progress == 100
        assert job.name == "sdk sync" and job.metadata == {"via": "sdk"}
        assert job.input == {"format": "wav", "sample_rate": SONG_RATE, "channels": 1, "duration": 20.0}
        began = time.monotonic()
        assert client.get(job, wait=30).succeeded and time.monotonic() - began < 5  # terminal: answered at once

        folder = tmp_path / "stems"
        files = client.download(job, folder)
        assert files == {"vocals": folder / "vocals.wav", "no_vocals": folder / "no_vocals.wav"}
        for path in files.values():
            assert decoded(path) == (20 * 44100, 44100, 2)  # the output rate's frames for the input's length
        manifest = json.loads((folder / "results.json").read_text())
        assert manifest["id"] == job.id and manifest["status"] == "succeeded" and manifest["name"] == "sdk sync"
        assert {stem: item["file"] for stem, item in manifest["results"].items()} == {
            "vocals": "vocals.wav", "no_vocals": "no_vocals.wav"}
        assert job.result is not None and manifest["results"]["vocals"]["sha256"] == job.result["vocals"].sha256
        one = client.download_result(job.id, "no_vocals", tmp_path / "again.wav")
        assert one.read_bytes() == files["no_vocals"].read_bytes()

        key = uuid.uuid4().hex
        first = client.submit(file=source, stems="vocals", output=SMALL, idempotency_key=key)
        assert client.submit(file=source, stems="vocals", output=SMALL, idempotency_key=key).id == first.id
        queued = client.submit(data=song(120.0, seed=5202), stems=["vocals"], output=SMALL)  # behind `first`
        with pytest.raises(WaitTimeout) as waited:
            client.wait(queued, timeout=1, poll=1)
        assert waited.value.job is not None and not waited.value.job.is_terminal
        cancelled = client.cancel(queued)
        assert cancelled.status == "cancelled" and client.cancel(queued.id).status == "cancelled"
        with pytest.raises(Conflict):
            client.download_result(queued.id, "vocals", tmp_path / "early.wav")
        with pytest.raises(JobNotSucceeded):
            next(client.iter_result(queued.id, "vocals"))
        with pytest.raises(JobNotSucceeded):
            client.download(queued.id, tmp_path / "none")
        first = client.wait(first, timeout=60)
        assert first.succeeded and first.raw["cache_hit"] is True  # the same song as `job`, same model
        assert decoded(client.download(first, tmp_path / "first")["vocals"]) == (20 * SONG_RATE, SONG_RATE, 1)
        page = client.list(status="succeeded", limit=1)
        assert [listed.id for listed in page.jobs] == [first.id] and page.next_cursor
        following = client.list(status=["succeeded"], limit=1, cursor=page.next_cursor)
        assert [listed.id for listed in following.jobs] == [job.id]
        newest = [listed.id for listed in islice(client.iter_jobs(status="succeeded", page_size=1), 2)]
        assert newest == [first.id, job.id]
        assert [listed.id for listed in client.list(status="cancelled", limit=1).jobs] == [queued.id]
        assert [listed.id for listed in client.list(status="succeeded,cancelled", limit=3).jobs][:2] == [
            queued.id, first.id]
        running = client.submit(data=song(30.0, seed=5203), stems=["vocals"], output=SMALL)
        streamed = b"".join(client.iter_result(running, "vocals", poll=0.2))  # asked for as it is queued
        assert client.get(running).succeeded
        assert streamed == (client.download_result(running, "vocals", tmp_path / "after.wav")).read_bytes()

        kept = live.data_dir / "blobs" / "results" / first.id
        assert kept.is_dir() and first.result is not None and first.result["vocals"].url
        client.delete(first)
        assert not kept.exists()
        assert requests.get(first.result["vocals"].url, timeout=30).status_code == 404  # its signed URL too
        with pytest.raises(NotFound) as gone:
            client.get(first.id)
        assert gone.value.status_code == 40400002 and gone.value.request_id
        with pytest.raises(NotFound):
            client.delete(first.id)
        client.delete(queued)  # a cancelled job can be deleted too
        assert queued.id not in [listed.id for listed in client.list(limit=10).jobs]


async def test_the_async_client_drives_every_verb(live: LiveGateway, tmp_path: Path, hooks: Receiver) -> None:
    copy_to = hooks.at("/bucket/vocals.flac?sig=1")
    async with AsyncSamiClient(live.url, timeout=30) as client:
        with pytest.raises(Unauthorized):
            await client.list()  # no token yet
        await client.get_token(ACCESS_KEY, SECRET_KEY, APPKEY, expiration=600)
        answer = await client.invoke(APPKEY, data=song(1.5, seed=5300, rate=44100, channels=2),
                                     payload={"model": "2track_acc", "extra": {"output_channel": 2}})
        samples, rate = audio_of(answer.data)
        assert samples.shape == (66150, 2) and rate == 44100

        with pytest.raises(BadRequest) as missing:
            await client.submit(data=song(1.0, seed=5301), model="htdemucs_6s")
        assert missing.value.status_code == 40000022
        assert "sami-gateway models fetch htdemucs_6s" in missing.value.message

        source = tmp_path / "song.wav"
        source.write_bytes(song(8.0, seed=5302))
        upload_id = await client.upload_file(source)
        job = await client.submit(upload_id=upload_id, model="htdemucs_ft", stems=["vocals", "no_vocals", "drums"],
                                  output={"format": "flac", "sample_rate": 48000}, webhook_url=hooks.at("/sdk"),
                                  copy_results_to={"vocals": copy_to})
        events = [event async for event in client.events(job)]
        assert events[0].event == "status" and events[-1].status == "succeeded"
        job = await client.wait(job, timeout=60)
        assert job.succeeded and job.output == {"format": "flac", "sample_rate": 48000, "channels": 2}
        assert job.result is not None and job.result["vocals"].is_copied
        assert job.result["vocals"].copied_to == "custom storage" and job.result["vocals"].url is None

        folder = tmp_path / "stems"
        files = await client.download(job, folder)
        assert files == {"no_vocals": folder / "no_vocals.flac", "drums": folder / "drums.flac"}
        assert not (folder / "vocals.flac").exists()  # it went to custom storage: skipped
        for path in files.values():
            assert decoded(path) == (8 * 48000, 48000, 2)
        manifest = json.loads((folder / "results.json").read_text())
        assert manifest["results"]["vocals"] == {"copied_to": "custom storage"}
        assert manifest["results"]["drums"]["file"] == "drums.flac"
        copied = hooks.received("/bucket/vocals.flac?sig=1")
        assert [item.method for item in copied] == ["PUT"]
        assert audio_of(copied[0].body)[0].shape == (8 * 48000, 2) and copied[0].headers["Content-Type"] == "audio/flac"

        hook = await asyncio.to_thread(wait_for, lambda: hooks.received("/sdk"), 30, "for the webhook")
        event = verify_webhook(hook[0].headers, hook[0].body, WEBHOOK_SECRET)
        assert event.type == "job.succeeded" and event.job is not None and event.job.id == job.id
        # A webhook consumer without a token downloads through the signed URLs the event carries.
        async with AsyncSamiClient(live.url, token="", timeout=30) as anonymous:
            fetched = await anonymous.download(event.job, tmp_path / "from-webhook")
            assert set(fetched) == {"no_vocals", "drums"}
            assert fetched["drums"].read_bytes() == files["drums"].read_bytes()
            with pytest.raises(Unauthorized):
                await anonymous.get(job.id)

        page = await client.list(status="succeeded", limit=1)
        assert [listed.id for listed in page.jobs] == [job.id]
        async for newest in client.iter_jobs(status="succeeded", page_size=1):
            assert newest.id == job.id
            break
        else:
            raise AssertionError("iter_jobs listed no succeeded job")

        queued = await client.submit(data=song(120.0, seed=5303), stems="vocals", output=SMALL)
        cancelled = await client.cancel(queued.id)
        assert cancelled.status == "cancelled" and (await client.get(queued)).status == "cancelled"
        assert [listed.id for listed in (await client.list(status="cancelled", limit=1)).jobs] == [queued.id]
        with pytest.raises(JobNotSucceeded):
            await client.download(queued, tmp_path / "none")

        async with AsyncSamiClient(live.url, token=live.token(OTHER_APPKEY), timeout=30) as other:
            assert (await other.list()).jobs == ()
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: other.get(job.id), lambda: other.cancel(job.id), lambda: other.delete(job.id),
                lambda: other.download_result(job.id, "drums", tmp_path / "theirs.flac")]
            for call in calls:
                with pytest.raises(NotFound):
                    await call()
            with pytest.raises(NotFound):
                async for _ in other.events(job.id):
                    pass
        assert not (tmp_path / "theirs.flac").exists()

        await client.delete(job)
        await client.delete(queued)
        for gone in (job, queued):
            with pytest.raises(NotFound):
                await client.get(gone)


LINE_LIKE = "a\u2028b\u2029c\x85d\x1ce"  # line separators to str.splitlines, ordinary text to SSE


def test_events_end_with_the_terminal_status_for_a_job_named_with_unicode_line_separators(
        live: LiveGateway) -> None:
    """Server-Sent Events end lines at CR, LF or CRLF only: a reader that also splits at U+2028
    (str.splitlines, httpx's iter_lines) cuts the JSON of every event that carries the job's name."""
    with SamiClient(live.url, timeout=30) as client:
        client.get_token(ACCESS_KEY, SECRET_KEY, APPKEY, expiration=600)
        job = client.submit(data=song(2.0, seed=5210), model="htdemucs", stems=["vocals"], name=LINE_LIKE,
                            metadata={"note": LINE_LIKE}, output=SMALL)
        events = list(client.events(job.id))
    assert events[-1].event == "status" and events[-1].status == "succeeded"
    assert events[-1].data["name"] == LINE_LIKE and events[-1].data["metadata"] == {"note": LINE_LIKE}


async def test_async_events_end_with_the_terminal_status_for_a_job_named_with_unicode_line_separators(
        live: LiveGateway) -> None:
    async with AsyncSamiClient(live.url, timeout=30) as client:
        await client.get_token(ACCESS_KEY, SECRET_KEY, APPKEY, expiration=600)
        job = await client.submit(data=song(2.0, seed=5211), model="htdemucs", stems=["vocals"], name=LINE_LIKE,
                                  output=SMALL)
        events = [event async for event in client.events(job.id)]
    assert events[-1].event == "status" and events[-1].status == "succeeded"
    assert events[-1].data["name"] == LINE_LIKE
