"""Jobs separated span by span (with SAMI_STREAM_JOBS, or longer than SAMI_MAX_AUDIO_SECONDS) against the
same jobs on the whole-song path."""

from __future__ import annotations

import io
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


@pytest.mark.parametrize("output", ["aac", "m4a"])
def test_other_output_formats_take_the_whole_song_path(output: str) -> None:
    class Params:
        class output_spec:
            format = output
        output = output_spec

    from namespaces.music_source_separate.settings import SeparationSettings

    every = SeparationSettings(stream_jobs=True)
    assert streamed_jobs.streamable(song("wav", 1.0), Params(), every) is None  # type: ignore[arg-type]


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
    memory map the blob store gives), and equals the whole-song job that a higher limit would run; an
    m4a job of the same length cannot stream yet and is refused by the whole-song path's limit."""
    import mmap

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
                with pytest.raises(GatewayError, match="audio lasts 6.0 s, the limit is 4 s"):
                    await run_job(namespace, scheduler, tmp_path / "m4a", {**request, "output": {"format": "m4a"}},
                                  data)
        finally:
            await namespace.stop()
    assert not ran[0].output.report.cache_hit and ran[1].output.cache_hit is False
    assert_close(ran[0], ran[1])
