"""Jobs separated span by span (with SAMI_STREAM_JOBS, or longer than SAMI_MAX_AUDIO_SECONDS) against the
same jobs on the whole-song path."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate import plugin
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.encode import encode
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.pipeline import streamed_jobs
from namespaces.music_source_separate.plugin import MusicSourceSeparate
from namespaces.music_source_separate.streaming import DecodedBlocks
from sami_gateway.errors import GatewayError
from sami_gateway.runtime.scheduler import Scheduler
from tests.conftest import tone

from .test_jobs import Ran, run_job, started


@pytest.fixture
def scheduler(make_scheduler: Callable[[int, float], Scheduler]) -> Scheduler:
    return make_scheduler(4, 1000.0)


def song(fmt: str, seconds: float = 9.0, rate: int = 48000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds, rate, 2, seed=5), rate, format=fmt.upper(),
             subtype="VORBIS" if fmt == "ogg" else "PCM_16")
    return buffer.getvalue()


async def both(model_store: Path, scheduler: Scheduler, tmp_path: Path, request: dict[str, Any],
               data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Ran, Ran]:
    """The job on the whole-song path, then streamed (checked to have streamed)."""
    streamed: list[int] = []

    async def counted(*args: Any) -> Any:
        streamed.append(1)
        return await streamed_jobs.run_streamed(*args)

    monkeypatch.setattr(plugin, "run_streamed", counted)
    ran = []
    for name, env in (("whole", {}), ("streamed", {"SAMI_STREAM_JOBS": "true"})):
        namespace: MusicSourceSeparate = await started(model_store, scheduler, None, **env)
        try:
            ran.append(await run_job(namespace, scheduler, tmp_path / name, request, data))
        finally:
            await namespace.stop()
        assert len(streamed) == (name == "streamed")
    return ran[0], ran[1]


def assert_close(whole: Ran, streamed: Ran) -> None:
    """The same files within one 16-bit step (the statistics' rounding), nearly every sample equal."""
    assert list(streamed.output.stems) == list(whole.output.stems)
    for stem, file in whole.output.stems.items():
        theirs, rate = sf.read(file.path, dtype="int16", always_2d=True)
        ours, our_rate = sf.read(streamed.output.stems[stem].path, dtype="int16", always_2d=True)
        assert (ours.shape, our_rate) == (theirs.shape, rate)
        assert streamed.output.stems[stem].duration == file.duration
        difference = np.abs(ours.astype(np.int32) - theirs)
        assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, stem
    assert streamed.output.input == whole.output.input
    assert streamed.progress[-1] == 100.0 and streamed.progress == sorted(streamed.progress)
    readies = [ready for _, ready in streamed.reports]
    assert readies[-1] == {stem: file.duration for stem, file in streamed.output.stems.items()}
    for stem in readies[-1]:  # the seconds of each stem ready only grow
        seconds = [ready[stem] for ready in readies if ready is not None]
        assert seconds == sorted(seconds), stem


def partly_ready(ran: Ran) -> bool:
    """Whether a progress report had some stem partly written (a stem that is not denoised afterwards)."""
    durations = [file.duration for file in ran.output.stems.values()]
    return any(0 < seconds < duration for _, ready in ran.reports if ready is not None
               for seconds, duration in zip(ready.values(), durations, strict=True))


async def test_a_demucs_job_streamed_equals_the_whole_song_job(model_store: Path, scheduler: Scheduler,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals", "drums"],
               "output": {"format": "wav", "sample_rate": 48000, "channels": 2}}
    whole, streamed = await both(model_store, scheduler, tmp_path, request, song("wav"), monkeypatch)
    assert_close(whole, streamed)
    assert streamed.units == whole.units  # the same model calls
    assert partly_ready(streamed) and not partly_ready(whole)  # span by span, the stems' seconds advance


async def test_a_denoised_sami_job_streamed_equals_the_whole_song_job(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = {"model": "bs_4track_acc", "stems": ["vocals", "no_vocals"],
               "output": {"format": "flac", "sample_rate": 44100, "channels": 1}}
    whole, streamed = await both(model_store, scheduler, tmp_path, request, song("flac", 6.0), monkeypatch)
    assert_close(whole, streamed)
    assert not partly_ready(streamed)  # denoised once the whole song is separated: ready all at once


async def test_an_mp3_job_streamed_decodes_as_the_whole_song_job(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mp3 out is written as the stems are final (LAME's Info frame in place at the end): each file decodes
    to the input's length, and to the whole-song job's audio but for the statistics' rounding."""
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"],
               "output": {"format": "mp3", "sample_rate": 44100, "channels": 2}}
    whole, streamed = await both(model_store, scheduler, tmp_path, request, song("wav"), monkeypatch)
    for stem, file in whole.output.stems.items():
        theirs, rate = sf.read(file.path, dtype="float32", always_2d=True)
        ours, our_rate = sf.read(streamed.output.stems[stem].path, dtype="float32", always_2d=True)
        assert (ours.shape, our_rate) == (theirs.shape, rate) == ((9 * 44100, 2), 44100)
        noise = float(np.sum((ours - theirs) ** 2))
        assert 10 * np.log10(float(np.sum(theirs ** 2)) / max(noise, 1e-20)) > 40, stem
    assert streamed.progress[-1] == 100.0 and partly_ready(streamed)


@pytest.mark.parametrize(("fmt", "rate", "channels"), [("aac", 44100, 2), ("m4a", 48000, 1)])
async def test_aac_and_m4a_jobs_streamed_decode_as_the_whole_song_job(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, rate: int,
        channels: int) -> None:
    """aac and m4a out are written as the stems are final, each file decoding to the whole-song job's audio
    but for the statistics' rounding (an m4a to exactly the input's length, its edit list set at the end).
    An aac is named readable while it is written; an m4a, whose index comes at its end, is not."""
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"],
               "output": {"format": fmt, "sample_rate": rate, "channels": channels}}
    whole, streamed = await both(model_store, scheduler, tmp_path, request, song("wav"), monkeypatch)
    for stem, file in whole.output.stems.items():
        theirs = decode(file.path.read_bytes(), AudioHint(), 60.0).samples
        ours = decode(streamed.output.stems[stem].path.read_bytes(), AudioHint(), 60.0).samples
        assert ours.shape == theirs.shape and streamed.output.stems[stem].duration == file.duration
        assert fmt == "aac" or ours.shape == (channels, 9 * rate)  # ADTS: the priming and padding too
        noise = float(np.sum((ours - theirs) ** 2))
        assert 10 * np.log10(float(np.sum(theirs ** 2)) / max(noise, 1e-20)) > 40, stem
    assert streamed.progress[-1] == 100.0 and partly_ready(streamed)
    assert sorted(streamed.growing) == (["no_vocals", "vocals"] if fmt == "aac" else [])


@pytest.mark.parametrize(("fmt", "output"), [("wav", "aac"), ("flac", "m4a"), ("wav", "mp3"), ("flac", "wav")])
def test_wav_or_flac_in_streams_to_every_output_format(fmt: str, output: str) -> None:
    class Params:
        class output_spec:
            format = output
        output = output_spec

    from namespaces.music_source_separate.settings import SeparationSettings

    found = streamed_jobs.streamable(song(fmt, 1.0), Params(), SeparationSettings())  # type: ignore[arg-type]
    assert found is not None and found.format == fmt


def test_mp3_out_takes_the_whole_song_path_where_no_lame_library_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from namespaces.music_source_separate.audio import lame as lame_module
    from namespaces.music_source_separate.settings import SeparationSettings

    class Params:
        class output:
            format = "mp3"

    monkeypatch.setattr(lame_module, "_loaded", [None])
    assert streamed_jobs.streamable(song("wav", 1.0), Params(), SeparationSettings()) is None  # type: ignore[arg-type]


def compressed(fmt: str, seconds: float, rate: int = 44100) -> bytes:
    """tone() encoded as a client sends it (ogg by libsndfile, the others by the audio library's encoders)."""
    if fmt == "ogg":
        return song("ogg", seconds, rate)
    return encode(np.ascontiguousarray(tone(seconds, rate, 2, seed=5).T), rate, fmt)


@pytest.mark.parametrize(("fmt", "named"), [("mp3", "mp3"), ("aac", "aac"), ("m4a", "mp4"), ("ogg", "ogg")])
def test_compressed_input_streams_where_the_job_may(fmt: str, named: str) -> None:
    """Decoded packet by packet (its frames counted first) with SAMI_STREAM_JOBS or past SAMI_MAX_AUDIO_SECONDS;
    a job its header shows within an invoke's limit takes the whole-song path without that first pass."""
    from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
    from namespaces.music_source_separate.settings import SeparationSettings

    class Params:
        class output:
            format = "flac"

    data = compressed(fmt, 2.0)
    assert streamed_jobs.streamable(data, Params(), SeparationSettings()) is None  # type: ignore[arg-type]
    for settings in (SeparationSettings(stream_jobs=True), SeparationSettings(max_audio_seconds=1.0)):
        streamed = streamed_jobs.streamable(data, Params(), settings)  # type: ignore[arg-type]
        assert streamed is not None and isinstance(streamed.blocks, DecodedBlocks)
        whole = decode(data, AudioHint(), 60.0)
        assert (streamed.format, streamed.blocks.frames) == (whole.format, whole.samples.shape[-1]) == (named, ANY)
    with pytest.raises(AudioError) as refused:
        streamed_jobs.streamable(data, Params(), SeparationSettings(max_audio_seconds=1.0, max_job_seconds=1.5))  # type: ignore[arg-type]
    assert refused.value.kind is AudioErrorKind.TOO_LONG


async def test_an_mp3_input_job_streamed_equals_the_whole_song_job(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mp3 decoded packet by packet gives the samples decode gives: the same stems as the whole-song job,
    and the input reported as the whole-song job reports it."""
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"],
               "output": {"format": "wav", "sample_rate": 44100, "channels": 2}}
    whole, streamed = await both(model_store, scheduler, tmp_path, request, compressed("mp3", 6.0), monkeypatch)
    assert_close(whole, streamed)
    assert streamed.output.input["format"] == whole.output.input["format"] == "mp3"


def test_inputs_past_the_limits_are_refused_or_take_the_whole_song_path() -> None:
    from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
    from namespaces.music_source_separate.settings import SeparationSettings

    class Params:
        class output:
            format = "wav"

    data = song("wav", 3.0)
    assert streamed_jobs.streamable(data, Params(), SeparationSettings()) is not None  # type: ignore[arg-type]
    longer = SeparationSettings(max_audio_seconds=2.0)  # longer than an invoke may be: a job streams it
    assert streamed_jobs.streamable(data, Params(), longer) is not None  # type: ignore[arg-type]
    with pytest.raises(AudioError) as refused:
        streamed_jobs.streamable(data, Params(), SeparationSettings(max_job_seconds=2.5))  # type: ignore[arg-type]
    assert refused.value.kind is AudioErrorKind.TOO_LONG and "the limit of a job is 2.5 s" in str(refused.value)
    assert streamed_jobs.streamable(data[:30], Params(), SeparationSettings()) is None  # type: ignore[arg-type]
    mono_only = SeparationSettings(max_input_channels=1)
    assert streamed_jobs.streamable(data, Params(), mono_only) is None  # type: ignore[arg-type]


async def test_a_job_longer_than_an_invoke_may_be_streams_from_its_mapped_input(
        model_store: Path, scheduler: Scheduler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SAMI_STREAM_JOBS, a wav job past SAMI_MAX_AUDIO_SECONDS streams (read in place from the
    memory map the blob store gives), and equals the whole-song job that a higher limit would run; a job
    that cannot stream (mp3 out where no LAME library loads) is refused by the whole-song path's limit."""
    import mmap

    from namespaces.music_source_separate.audio import lame as lame_module

    data = song("wav", 6.0)
    (tmp_path / "input.wav").write_bytes(data)
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"], "output": {"format": "wav"}}
    ran = []
    for name, env in (("whole", {"SAMI_MAX_AUDIO_SECONDS": "10"}), ("long", {"SAMI_MAX_AUDIO_SECONDS": "4"})):
        namespace: MusicSourceSeparate = await started(model_store, scheduler, None, **env)
        try:
            with open(tmp_path / "input.wav", "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            ran.append(await run_job(namespace, scheduler, tmp_path / name, request, mapped))  # type: ignore[arg-type]
            if name == "long":
                with monkeypatch.context() as patch, \
                        pytest.raises(GatewayError, match="audio lasts 6.0 s, the limit is 4 s"):
                    patch.setattr(lame_module, "_loaded", [None])
                    await run_job(namespace, scheduler, tmp_path / "mp3", {**request, "output": {"format": "mp3"}},
                                  data)
        finally:
            await namespace.stop()
    assert not ran[0].output.report.cache_hit and ran[1].output.cache_hit is False
    assert_close(ran[0], ran[1])


def entries(data_dir: Path) -> list[Path]:
    """The stem cache's kept entries (checked to leave nothing temporary behind)."""
    found = sorted((data_dir / "stem-cache").iterdir())
    assert not [path for path in found if path.name.startswith(".")], found
    return found


def same_files(first: Ran, second: Ran) -> bool:
    return list(first.output.stems) == list(second.output.stems) and all(
        file.path.read_bytes() == second.output.stems[stem].path.read_bytes()
        for stem, file in first.output.stems.items())


async def test_a_streamed_job_asked_again_is_built_from_the_cache_entry_it_filled(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    """The first job writes its sources into the stem cache span by span; the second reads them back span
    by span, without the model, into the same files to the byte, its progress and ready seconds growing."""
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals", "drums"],
               "output": {"format": "wav", "sample_rate": 48000, "channels": 2}}
    namespace: MusicSourceSeparate = await started(model_store, scheduler, tmp_path / "data", SAMI_STREAM_JOBS="true")
    try:
        first = await run_job(namespace, scheduler, tmp_path / "first", request, song("wav", 6.0))
        second = await run_job(namespace, scheduler, tmp_path / "second", request, song("wav", 6.0))
    finally:
        await namespace.stop()
    assert (first.output.cache_hit, first.output.report.cache_hit, first.units > 0) == (False, False, True)
    assert (second.output.cache_hit, second.output.report.cache_hit, second.units) == (True, True, 0)
    assert same_files(first, second) and second.output.input == first.output.input
    assert second.progress[-1] == 100.0 and second.progress == sorted(second.progress) and partly_ready(second)
    [entry] = entries(tmp_path / "data")
    assert sorted(path.name for path in entry.iterdir()) == [
        "bass.npy", "drums.npy", "holders", "meta.json", "other.npy", "vocals.npy"]


async def test_the_whole_song_path_and_a_streamed_job_hit_each_others_entries(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    """Either path writes the entry the other reads: the same key, meta and files (the arrays equal but
    for the statistics' rounding), and a job of the other path answers from it without the model."""
    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"],
               "output": {"format": "flac", "sample_rate": 44100, "channels": 1}}
    data = song("wav", 2.0)
    kept: dict[str, dict[str, Any]] = {}
    for first, env in (("whole", {}), ("streamed", {"SAMI_STREAM_JOBS": "true"})):
        data_dir = tmp_path / first
        ran = []
        for path_env in (env, {"SAMI_STREAM_JOBS": "true"} if not env else {}):
            namespace: MusicSourceSeparate = await started(model_store, scheduler, data_dir, **path_env)
            try:
                ran.append(await run_job(namespace, scheduler, data_dir / f"w{len(ran)}", request, data))
            finally:
                await namespace.stop()
        assert [(one.output.cache_hit, one.units > 0) for one in ran] == [(False, True), (True, False)]
        assert_close(ran[0], ran[1])
        [entry] = entries(data_dir)
        meta = json.loads((entry / "meta.json").read_text())
        kept[first] = {"key": entry.name, "meta": {**meta, "written": 0},
                       "sources": {name: np.load(entry / f"{name}.npy") for name in meta["sources"]}}
    whole, streamed = kept["whole"], kept["streamed"]
    assert (whole["key"], whole["meta"]) == (streamed["key"], streamed["meta"])
    assert whole["meta"]["sources"] == ["drums", "bass", "other", "vocals"]
    for name, array in whole["sources"].items():
        theirs = streamed["sources"][name]
        assert (theirs.shape, theirs.dtype) == (array.shape, array.dtype) == ((2, 2 * 44100), np.float16)
        differ = array != theirs
        assert np.mean(differ) < 0.01 and np.max(np.abs(array - theirs.astype(np.float32))) < 1e-3, name


async def test_a_streamed_job_asked_twice_at_once_is_separated_once(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    """Single flight: the second job of a song being separated waits for the first to keep its entry and
    builds its files from it."""
    import asyncio

    request = {"model": "htdemucs", "stems": ["vocals", "no_vocals"], "output": {"format": "wav"}}
    data = song("wav", 6.0, 44100)
    namespace: MusicSourceSeparate = await started(model_store, scheduler, None, SAMI_STREAM_JOBS="true")
    try:  # no cache: what one separation costs
        alone = await run_job(namespace, scheduler, tmp_path / "alone", request, data)
    finally:
        await namespace.stop()
    namespace = await started(model_store, scheduler, tmp_path / "data", SAMI_STREAM_JOBS="true")
    try:
        before = scheduler.snapshot().units_done
        both = await asyncio.gather(*(run_job(namespace, scheduler, tmp_path / name, request, data)
                                      for name in ("a", "b")))
        assert scheduler.snapshot().units_done - before == alone.units > 0  # one separation between them
    finally:
        await namespace.stop()
    assert sorted(ran.output.cache_hit for ran in both) == [False, True]
    assert same_files(both[0], both[1]) and same_files(both[0], alone)
    assert len(entries(tmp_path / "data")) == 1


async def test_an_entry_past_the_cache_bound_is_not_kept_and_a_failed_job_leaves_none(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    request = {"model": "htdemucs", "stems": ["vocals"], "output": {"format": "wav"}}
    namespace: MusicSourceSeparate = await started(model_store, scheduler, tmp_path / "small", SAMI_STREAM_JOBS="true",
                                                   SAMI_STEM_CACHE_BYTES=str(4 * 2 * 44100 * 2))
    try:  # four float16 stereo sources of 2 s, 1 s allowed
        ran = [await run_job(namespace, scheduler, tmp_path / f"w{index}", request, song("wav", 2.0, 44100))
               for index in range(2)]
        assert [one.output.cache_hit for one in ran] == [False, False] and entries(tmp_path / "small") == []
        (tmp_path / "failed" / "vocals.wav").mkdir(parents=True)  # its file cannot be written
        with pytest.raises(IsADirectoryError):  # the entry it began (0.5 s fits) is removed
            await run_job(namespace, scheduler, tmp_path / "failed", request, song("wav", 0.5, 44100))
        assert entries(tmp_path / "small") == []
    finally:
        await namespace.stop()


async def test_a_streamed_job_and_a_whole_song_job_of_one_song_at_once_share_one_separation(
        model_store: Path, scheduler: Scheduler, tmp_path: Path) -> None:
    """Single flight across the paths, a job that cannot stream (m4a out) and one that does, of one song at
    once: the whole-song job leads (its input decoded and hashed in one step), or the streamed one, the
    other asked once its entry is begun; the other takes the entry the leader keeps."""
    import asyncio

    namespace: MusicSourceSeparate = await started(model_store, scheduler, tmp_path / "data", SAMI_STREAM_JOBS="true")

    def job(name: str, fmt: str, data: bytes) -> asyncio.Future[Ran]:
        return asyncio.ensure_future(run_job(namespace, scheduler, tmp_path / name, {
            "model": "htdemucs", "stems": ["vocals"], "output": {"format": fmt}}, data))

    async def begun() -> None:
        while not any(path.name.startswith(".tmp-") for path in (tmp_path / "data" / "stem-cache").iterdir()):
            await asyncio.sleep(0.005)

    try:
        for first, second in (("m4a", "wav"), ("wav", "m4a")):
            data = song("wav", 3.0 if first == "m4a" else 2.0, 44100)
            before = scheduler.snapshot().units_done
            leader = job(f"{first}1", first, data)
            if first == "wav":
                await asyncio.wait_for(begun(), 30)
            follower = await job(f"{second}2", second, data)
            assert not (await leader).output.cache_hit and follower.output.cache_hit
            assert scheduler.snapshot().units_done - before > 0
            again = await run_job(namespace, scheduler, tmp_path / f"{first}again",
                                  {"model": "htdemucs", "stems": ["drums"]}, data)
            assert again.output.cache_hit and again.units == 0
    finally:
        await namespace.stop()
    assert len(entries(tmp_path / "data")) == 2
