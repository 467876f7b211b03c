"""The namespace in-process: which model backs what, and where the denoiser runs."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.plugin import MusicSourceSeparate, create_namespace
from namespaces.music_source_separate.requests import stems
from sami_gateway.config import ConfigError, load_config
from sami_gateway.errors import Code, GatewayError
from sami_gateway.runtime.namespace import Call, NamespaceStartError
from sami_gateway.runtime.scheduler import Scheduler, TaskTimeout
from tests.conftest import wav_bytes


def config_for(store: Path, data_dir: Path | None = None, **env: str):  # type: ignore[no-untyped-def]
    """The namespace's configuration; its stem cache is off unless a data_dir is given."""
    cache = {"SAMI_DATA_DIR": str(data_dir)} if data_dir else {"SAMI_STEM_CACHE_BYTES": "0"}
    return load_config({}, {"SAMI_MODEL_DIR": str(store), "SAMI_THREADS": "2", **cache, **env}, need_secret=False)


def call(namespace: MusicSourceSeparate, data: bytes, payload: dict[str, object]) -> Call:  # type: ignore[type-arg]
    return Call("t", "k", namespace.parse(payload), data)


@pytest.fixture
def scheduler(make_scheduler: Callable[[int, float], Scheduler]) -> Scheduler:
    return make_scheduler(4, 1000.0)


@pytest.fixture
async def namespace(model_store: Path, scheduler: Scheduler) -> AsyncIterator[MusicSourceSeparate]:
    ns = create_namespace(config_for(model_store))
    await ns.start(scheduler)
    yield ns
    await ns.stop()


async def test_default_backends(namespace: MusicSourceSeparate) -> None:
    assert namespace._targets == {"2track_vocal": ("htdemucs_ft", "vocals"), "2track_acc": ("htdemucs_ft", "vocals"),
                                  "bs_4track_vocal": ("htdemucs", None), "bs_4track_acc": ("htdemucs", None)}
    loaded = {key.label: key for key in namespace._models.loaded()}
    assert set(loaded) == {"htdemucs_ft:vocals", "htdemucs"}  # each loaded once at start
    lease = namespace._models.acquire(loaded["htdemucs_ft:vocals"])
    try:
        assert len(lease.value.model.members) == 1  # only the vocals specialist
    finally:
        namespace._models.release(lease)


@pytest.mark.parametrize(("model", "denoised"), [("2track_vocal", False), ("2track_acc", False),
                                                 ("bs_4track_vocal", True), ("bs_4track_acc", True)])
async def test_only_bs_models_denoise(namespace: MusicSourceSeparate, monkeypatch: pytest.MonkeyPatch,
                                      model: str, denoised: bool) -> None:
    calls: list[tuple[int, ...]] = []

    def spy(samples: np.ndarray, rate: int) -> np.ndarray:
        calls.append(samples.shape)
        return np.zeros_like(samples)  # makes the effect visible in the output

    monkeypatch.setattr(stems, "denoise", spy)
    out = await namespace.run(call(namespace, wav_bytes(0.5), {"model": model}))
    assert out.report.model == model and out.report.input_seconds == pytest.approx(0.5)
    audio, _ = sf.read(io.BytesIO(out.data or b""))
    assert bool(calls) is denoised
    assert bool(np.abs(audio).max() == 0) is denoised


async def test_missing_model_stops_the_start(tmp_path: Path, scheduler: Scheduler) -> None:
    ns = create_namespace(config_for(tmp_path))
    with pytest.raises(NamespaceStartError, match="htdemucs_ft"):
        await ns.start(scheduler)
    await ns.stop()


def test_bad_device_is_a_config_error(model_store: Path) -> None:
    with pytest.raises(ConfigError, match="SAMI_DEVICE"):
        create_namespace(config_for(model_store, SAMI_DEVICE="cuda:0"))


async def test_more_channels_only_where_configured(model_store: Path, scheduler: Scheduler,
                                                   namespace: MusicSourceSeparate) -> None:
    """SAMI takes mono or stereo; SAMI_MAX_INPUT_CHANNELS lets surround in, downmixed to stereo."""
    six = call(namespace, wav_bytes(0.5, channels=6), {"model": "2track_acc", "extra": {"output_channel": 2}})
    with pytest.raises(GatewayError) as refused:
        await namespace.run(six)
    assert refused.value.code is Code.ILLEGAL_DATA and "6 channels" in refused.value.detail
    wide = create_namespace(config_for(model_store, SAMI_MAX_INPUT_CHANNELS="6"))
    await wide.start(scheduler)
    try:
        out = await wide.run(six)
    finally:
        await wide.stop()
    audio, rate = sf.read(io.BytesIO(out.data or b""), always_2d=True)
    assert audio.shape == (rate // 2, 2) and np.abs(audio).max() > 0


async def test_start_reports_each_models_load_time(namespace: MusicSourceSeparate) -> None:
    assert set(namespace.load_seconds()) == {"htdemucs_ft:vocals", "htdemucs"}
    assert all(seconds > 0 for seconds in namespace.load_seconds().values())


@pytest.mark.parametrize(("model", "only_load"), [("htdemucs", None), ("htdemucs_ft", "vocals")])
async def test_the_sources_come_span_by_span_the_whole_songs_to_the_bit(
        namespace: MusicSourceSeparate, monkeypatch: pytest.MonkeyPatch, model: str, only_load: str | None) -> None:
    """Demucs's segments run span by span (no whole-song float32 array per source), with the whole mix's
    statistics: the sources kept are those of the whole-song computation, bit for bit."""
    from namespaces.music_source_separate.audio.sniff import AudioHint
    from namespaces.music_source_separate.pipeline import separation
    from namespaces.music_source_separate.pipeline.stem_cache import CacheUse

    pipeline, lane = namespace._pipeline, namespace._lane(batch=False)
    assert pipeline is not None
    song = wav_bytes(9.3)  # past a segment, with a remainder
    streamed = await pipeline.separate(lane, song, AudioHint(), model, only_load, CacheUse("k"))
    monkeypatch.setattr(separation, "_demucs", lambda separator: False)  # the whole-song path
    whole = await pipeline.separate(lane, song, AudioHint(), model, only_load, CacheUse("k"))
    assert streamed.sources.keys() == whole.sources.keys() and streamed.sources
    for name, sources in whole.sources.items():
        assert streamed.sources[name].dtype == sources.dtype
        assert np.array_equal(streamed.sources[name], sources), name


async def test_an_invoke_holds_its_bytes_until_answered_and_is_refused_past_the_bound(
        namespace: MusicSourceSeparate, scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler counts what an invoke holds (`invoke_held_bytes`: 10 s of 44.1 kHz stereo in, the
    mix, four float16 sources, a mono 22.05 kHz float32 output and its encoding) from the model's start
    to its answer; past `max_bytes` another is refused before its model runs."""
    from namespaces.music_source_separate.pipeline import separation
    from sami_gateway.runtime.scheduler import Limits

    seen: list[int] = []
    real = separation.stream_steps

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(scheduler.snapshot().held_bytes)
        return real(*args, **kwargs)

    monkeypatch.setattr(separation, "stream_steps", watched)
    song = call(namespace, wav_bytes(10.0), {"model": "bs_4track_vocal", "extra": {
        "output_sample_rate": 22050, "output_channel": 1}})
    await namespace.run(song)
    frames, out = 441_000, 220_500
    separating = 8 * frames + 4 * 2 * frames * 2 + 8 * frames + 2 * 4 * 1 * out
    assert seen == [max(16 * frames, separating)] and scheduler.snapshot().held_bytes == 0
    scheduler.limits = Limits(4, 1000.0, max_bytes=separating + 1000)
    with scheduler.holding(2000):  # another request's bytes: this one no longer fits
        with pytest.raises(GatewayError) as refused:
            await namespace.run(song)
        assert refused.value.code is Code.OVERLOADED
        assert len(seen) == 1 and scheduler.snapshot().held_bytes == 2000  # refused before the model ran
    await namespace.run(song)  # fits again
    assert len(seen) == 2 and scheduler.snapshot().held_bytes == 0

    async def timed_out(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TaskTimeout()

    monkeypatch.setattr(scheduler, "submit", timed_out)
    with pytest.raises(TaskTimeout):
        await namespace.run(song)
    assert scheduler.snapshot().held_bytes == 0  # a failed run lets its bytes go at once, not at a collection


async def test_a_song_asked_for_twice_at_once_is_separated_once(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    """Single flight: the second invoke of a song being separated for the same appkey waits for the first
    and takes its sources (answered as a cache hit); another appkey's, whose cache entries are its own,
    separates the song itself."""
    ns = create_namespace(config_for(model_store, tmp_path / "data"))
    await ns.start(scheduler)
    try:
        song = wav_bytes(12.0)

        def invoke(appkey: str) -> Call:  # type: ignore[type-arg]
            return Call("t", appkey, ns.parse({"model": "bs_4track_vocal"}), song)

        before = scheduler.snapshot().units_done
        first, second = await asyncio.gather(ns.run(invoke("a")), ns.run(invoke("a")))
        one_separation = scheduler.snapshot().units_done - before
        assert sorted((first.payload["cache_hit"], second.payload["cache_hit"])) == [False, True]  # either leads
        assert first.data == second.data and one_separation > 0
        before = scheduler.snapshot().units_done
        mine, theirs = await asyncio.gather(ns.run(invoke("a")), ns.run(invoke("b")))
        assert (mine.payload["cache_hit"], theirs.payload["cache_hit"]) == (True, False)
        assert scheduler.snapshot().units_done - before == one_separation and theirs.data == first.data
    finally:
        await ns.stop()
