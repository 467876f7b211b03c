"""The namespace's jobs: one separation for every stem, files of the input's length, progress, the
stem cache shared with invoke (and kept across a restart), models loaded on demand within the bound."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.pipeline import separation as pipeline
from namespaces.music_source_separate.pipeline.stem_cache import holder_name
from namespaces.music_source_separate.plugin import MusicSourceSeparate, create_namespace
from namespaces.music_source_separate.requests.job_params import JobParams
from sami_gateway.errors import Code, GatewayError
from sami_gateway.runtime.namespace import Call, JobCall, JobNamespace, JobOutput
from sami_gateway.runtime.scheduler import Scheduler
from tests.conftest import tone, wav_bytes

from .test_plugin import config_for

SECONDS = 1.0


@pytest.fixture
def scheduler(make_scheduler: Callable[[int, float], Scheduler]) -> Scheduler:
    return make_scheduler(4, 1000.0)


async def started(store: Path, scheduler: Scheduler, data_dir: Path | None, **env: str) -> MusicSourceSeparate:
    namespace = create_namespace(config_for(store, data_dir, **env))
    await namespace.start(scheduler)
    return namespace


@pytest.fixture
async def namespace(model_store: Path, scheduler: Scheduler, tmp_path: Path) -> AsyncIterator[MusicSourceSeparate]:
    ns = await started(model_store, scheduler, tmp_path / "data")
    yield ns
    await ns.stop()


class Ran:
    """A job's output, its progress reports (percent, and the seconds of each stem ready), the model
    calls it cost and the files it named as readable while written (`JobCall.growing`)."""

    def __init__(self, output: JobOutput, reports: list[tuple[float, dict[str, float] | None]], units: int,
                 growing: dict[str, Path]) -> None:
        self.output, self.reports, self.units, self.growing = output, reports, units, growing
        self.progress = [percent for percent, _ in reports]

    def read(self, stem: str) -> tuple[np.ndarray, int]:
        audio, rate = sf.read(self.output.stems[stem].path, always_2d=True, dtype="float32")
        return audio.T, rate


async def run_job(namespace: MusicSourceSeparate, scheduler: Scheduler, workdir: Path, request: dict[str, Any],
                  data: bytes | None = None) -> Ran:
    params: JobParams = namespace.parse_job(request)
    workdir.mkdir(parents=True, exist_ok=True)
    reports: list[tuple[float, dict[str, float] | None]] = []

    def progress(percent: float, ready: Mapping[str, float] | None = None) -> None:
        reports.append((percent, None if ready is None else dict(ready)))
    growing: dict[str, Path] = {}
    before = scheduler.snapshot().units_done
    output = await namespace.run_job(JobCall("job", "k", params, data or wav_bytes(SECONDS), workdir, progress,
                                             growing.__setitem__))
    return Ran(output, reports, scheduler.snapshot().units_done - before, growing)


def test_the_namespace_runs_jobs(model_store: Path) -> None:
    assert isinstance(create_namespace(config_for(model_store)), JobNamespace)


def test_the_namespace_lists_its_models_as_configured_without_starting(model_store: Path) -> None:
    namespace = create_namespace(config_for(model_store, SAMI_JOB_MODEL="2track_acc",
                                            SAMI_MODEL_MAP="2track_vocal=htdemucs"))
    listing = namespace.job_models()
    assert listing["default_model"] == "2track_acc"
    assert [model["name"] for model in listing["models"]] == [
        "2track_acc", "htdemucs", "htdemucs_ft", "2track_vocal", "bs_4track_vocal", "bs_4track_acc"]
    assert listing["models"][3]["description"].endswith("(runs htdemucs)")


async def test_several_stems_cost_one_separation(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                                 tmp_path: Path) -> None:
    ran = await run_job(namespace, scheduler, tmp_path / "w", {"stems": ["vocals", "no_vocals", "drums"],
                                                               "output": {"format": "flac"}})
    assert ran.units == 1 and not ran.output.cache_hit  # the tiny htdemucs: one model call for a second
    assert list(ran.output.stems) == ["vocals", "no_vocals", "drums"]
    decoded = {}
    for stem, file in ran.output.stems.items():
        assert file.path == tmp_path / "w" / f"{stem}.flac" and file.format == "flac"
        assert file.duration == pytest.approx(SECONDS)
        decoded[stem], rate = ran.read(stem)
        assert rate == 44100 and decoded[stem].shape == (2, int(SECONDS * 44100))
    # A source and its `no_` form give the input back (to 16-bit rounding).
    np.testing.assert_allclose(decoded["vocals"] + decoded["no_vocals"], tone(SECONDS).T, atol=1e-3)
    assert ran.output.input == {"format": "wav", "sample_rate": 44100, "channels": 2, "duration": SECONDS}
    assert ran.output.report.model == "htdemucs" and ran.output.report.input_seconds == pytest.approx(SECONDS)


async def test_output_rate_channels_and_length(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                               tmp_path: Path) -> None:
    data = wav_bytes(0.7, rate=22050, channels=1)
    ran = await run_job(namespace, scheduler, tmp_path / "w",
                        {"stems": ["bass"], "output": {"sample_rate": 16000, "channels": 1}}, data)
    frames = int(0.7 * 22050)  # as tone() makes it
    audio, rate = ran.read("bass")
    assert rate == 16000 and audio.shape == (1, round(frames * 16000 / 22050))
    assert ran.output.stems["bass"].duration == round(frames * 16000 / 22050) / 16000
    assert ran.output.input == {"format": "wav", "sample_rate": 22050, "channels": 1,
                                "duration": round(frames / 22050, 6)}


async def test_progress_grows_to_100(namespace: MusicSourceSeparate, scheduler: Scheduler, tmp_path: Path) -> None:
    ran = await run_job(namespace, scheduler, tmp_path / "w", {"stems": ["vocals", "other"]},
                        wav_bytes(7.0))  # two segments of the tiny model: two model calls
    assert ran.units == 2
    assert ran.progress == sorted(ran.progress) and len(set(ran.progress)) == len(ran.progress)
    assert 0 < ran.progress[0] < 90 and ran.progress[-1] == 100 and len(ran.progress) == 4
    # a whole-song job: no stem is ready before its file is written, then all of it is
    assert [ready for _, ready in ran.reports] == [
        {"vocals": 0.0, "other": 0.0}, {"vocals": 0.0, "other": 0.0}, {"vocals": 7.0, "other": 0.0},
        {"vocals": 7.0, "other": 7.0}]


@pytest.mark.parametrize("model", ["2track_acc", "bs_4track_vocal"])
async def test_a_sami_model_job_equals_invoke(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                              tmp_path: Path, model: str) -> None:
    invoked = await namespace.run(Call("t", "k", namespace.parse({"model": model}), wav_bytes(SECONDS)))
    ran = await run_job(namespace, scheduler, tmp_path / "w",
                        {"model": model, "stems": ["vocals", "no_vocals"], "output": {"channels": 1}})
    target = "vocals" if model.endswith("vocal") else "no_vocals"
    assert ran.output.stems[target].path.read_bytes() == invoked.data  # from the cache, as invoke made it
    assert invoked.payload["cache_hit"] is False and ran.output.cache_hit and ran.units == 0
    other = "no_vocals" if target == "vocals" else "vocals"
    assert ran.output.stems[other].path.read_bytes() == (await namespace.run(Call(
        "t", "k", namespace.parse({"model": model.replace("_acc", "_vocal") if target == "no_vocals"
                                   else model.replace("_vocal", "_acc")}), wav_bytes(SECONDS)))).data


async def test_invoke_reuses_its_own_separation(namespace: MusicSourceSeparate, scheduler: Scheduler) -> None:
    payloads = []
    for model in ("2track_vocal", "2track_acc"):
        before = scheduler.snapshot().units_done
        result = await namespace.run(Call("t", "k", namespace.parse({"model": model}), wav_bytes(SECONDS)))
        payloads.append((result.payload["cache_hit"], scheduler.snapshot().units_done - before))
    assert payloads == [(False, 1), (True, 0)]


async def test_the_cache_survives_a_restart(model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    request = {"model": "htdemucs_ft", "stems": ["no_vocals"]}
    outputs = []
    for _ in range(2):
        namespace = await started(model_store, scheduler, tmp_path / "data")
        try:
            outputs.append(await run_job(namespace, scheduler, tmp_path / f"w{len(outputs)}", request))
        finally:
            await namespace.stop()
    assert [(ran.output.cache_hit, ran.units) for ran in outputs] == [(False, 1), (True, 0)]
    assert outputs[0].output.stems["no_vocals"].path.read_bytes() == \
        outputs[1].output.stems["no_vocals"].path.read_bytes()
    entries = [path for path in (tmp_path / "data" / "stem-cache").iterdir()]
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == ["holders", "meta.json", "vocals.npy"]
    assert [p.name for p in (entries[0] / "holders").iterdir()] == [holder_name("k", "job")]  # the one job


async def test_forget_job_deletes_the_entry_the_job_made_and_leaves_other_appkeys(
        namespace: MusicSourceSeparate, scheduler: Scheduler, tmp_path: Path) -> None:
    cache = tmp_path / "data" / "stem-cache"
    params = namespace.parse_job({"stems": ["vocals"]})
    for appkey in ("k", "other"):
        output = await namespace.run_job(JobCall("job", appkey, params, wav_bytes(SECONDS), tmp_path, lambda *_: None))
        assert output.cache_hit is False  # another appkey's entry is not this one's
    assert len(list(cache.iterdir())) == 2
    await namespace.forget_job("k", "job")
    assert len(list(cache.iterdir())) == 1
    again = await namespace.run_job(JobCall("job2", "other", params, wav_bytes(SECONDS), tmp_path, lambda *_: None))
    assert again.cache_hit is True  # "other"'s own entry stayed
    await namespace.forget_job("k", "unknown")  # a job it never saw: nothing happens


async def test_models_load_on_demand_within_the_bound(model_store: Path, scheduler: Scheduler,
                                                      tmp_path: Path) -> None:
    namespace = await started(model_store, scheduler, None, SAMI_MAX_LOADED_MODELS="1")
    try:
        assert [key.label for key in namespace._models.loaded()] == ["htdemucs"]  # the last of the map's
        await run_job(namespace, scheduler, tmp_path / "w", {"model": "htdemucs_ft", "stems": ["vocals"]})
        assert [key.label for key in namespace._models.loaded()] == ["htdemucs_ft:vocals"]
        result = await namespace.run(Call("t", "k", namespace.parse({"model": "bs_4track_acc"}), wav_bytes(0.5)))
        assert result.payload["cache_hit"] is False
        assert [key.label for key in namespace._models.loaded()] == ["htdemucs"]
    finally:
        await namespace.stop()


async def test_a_job_runs_as_batch_work_on_the_jobs_audio_thread(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    decode = pipeline.decode
    monkeypatch.setattr(pipeline, "decode", lambda *a: threads.append(threading.current_thread().name) or decode(*a))
    batches: list[bool] = []
    submit = scheduler.submit

    async def spy(*args: Any, batch: bool = False, **kwargs: Any) -> Any:
        batches.append(batch)
        return await submit(*args, batch=batch, **kwargs)

    monkeypatch.setattr(scheduler, "submit", spy)
    await run_job(namespace, scheduler, tmp_path / "w", {"stems": ["vocals"]})
    await namespace.run(Call("t", "k", namespace.parse({"model": "2track_vocal"}), wav_bytes(SECONDS)))
    assert batches == [True, False]
    assert threads[0].startswith("mss-job-audio") and threads[1].startswith("mss-audio")


async def test_bad_audio_fails_the_job_as_invoke_answers(namespace: MusicSourceSeparate, scheduler: Scheduler,
                                                         tmp_path: Path) -> None:
    with pytest.raises(GatewayError) as refused:
        await run_job(namespace, scheduler, tmp_path / "w", {}, b"RIFF" + b"\0" * 100)
    assert refused.value.code is Code.ILLEGAL_DATA


async def test_a_model_removed_before_the_job_runs(model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_store, store)
    namespace = await started(store, scheduler, None)
    try:
        params = namespace.parse_job({"model": "htdemucs_ft"})
        next(store.glob("f7e0c4bc-*.th")).unlink()
        with pytest.raises(GatewayError) as refused:
            await namespace.run_job(JobCall("j", "k", params, wav_bytes(0.5), tmp_path, lambda *_: None))
        assert refused.value.code is Code.ILLEGAL_PAYLOAD and "models fetch htdemucs_ft" in refused.value.detail
    finally:
        await namespace.stop()


async def test_invoke_payload_carries_cache_hit_without_a_cache(model_store: Path, scheduler: Scheduler) -> None:
    namespace = await started(model_store, scheduler, None)  # SAMI_STEM_CACHE_BYTES=0
    try:
        for _ in range(2):
            result = await namespace.run(Call("t", "k", namespace.parse({}), wav_bytes(0.5)))
            assert result.payload["cache_hit"] is False
        audio, _ = sf.read(io.BytesIO(result.data or b""))
        assert audio.shape == (22050,)
    finally:
        await namespace.stop()


async def test_a_job_cancelled_while_its_model_is_leased_gives_the_lease_back(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while the audio thread takes the model's lease: the lease still ends when that
    thread is done, so the model can be unloaded (a kept lease would pin it past the bound)."""
    namespace = await started(model_store, scheduler, None, SAMI_MAX_LOADED_MODELS="1")
    leased, go_on = threading.Event(), threading.Event()
    to_model_rate = pipeline.Pipeline._to_model_rate

    def held_up(self: pipeline.Pipeline, work: pipeline.Work) -> None:  # runs with the lease taken
        leased.set()
        assert go_on.wait(30)
        to_model_rate(self, work)

    monkeypatch.setattr(pipeline.Pipeline, "_to_model_rate", held_up)
    try:
        job = asyncio.ensure_future(run_job(namespace, scheduler, tmp_path / "w",
                                            {"model": "htdemucs_ft", "stems": ["vocals"]}))
        assert await asyncio.to_thread(leased.wait, 30)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        monkeypatch.setattr(pipeline.Pipeline, "_to_model_rate", to_model_rate)
        go_on.set()
        result = await namespace.run(Call("t", "k", namespace.parse({"model": "bs_4track_acc"}), wav_bytes(0.5)))
        assert result.payload["cache_hit"] is False
        assert [key.label for key in namespace._models.loaded()] == ["htdemucs"]  # htdemucs_ft unloaded
    finally:
        go_on.set()
        await namespace.stop()
