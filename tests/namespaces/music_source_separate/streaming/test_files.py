"""An input separated into stem files block by block against the one-shot decode, separation and render."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from namespaces.music_source_separate.audio.convert import output_frames, resample, to_stereo
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.engine.ensemble import Ensemble
from namespaces.music_source_separate.engine.inference import separate
from namespaces.music_source_separate.models.layout import load_ensemble
from namespaces.music_source_separate.requests.sami_models import SAMI_MODELS
from namespaces.music_source_separate.requests.stems import demucs_stem, render, sami_target
from namespaces.music_source_separate.streaming import FileBlocks
from namespaces.music_source_separate.streaming.encode import write_blocks
from namespaces.music_source_separate.streaming.files import FileJob, Output, StemTarget, separate_to_files

from ....conftest import tone


@pytest.fixture(scope="module")
def single(model_store: Path) -> Ensemble:
    return load_ensemble(model_store, "htdemucs")


def one_shot(ensemble: Ensemble, data: bytes, stems: list[str], output: Output) -> dict[str, bytes]:
    """What the pipeline does today: decode, to_stereo, resample, separate, render each stem."""
    decoded = decode(data, AudioHint(), 600.0, 8)
    mix = resample(to_stereo(decoded.samples), decoded.sample_rate, ensemble.samplerate)
    separated = separate(ensemble, torch.from_numpy(np.ascontiguousarray(mix))).numpy()
    sources = {name: separated[index] for index, name in enumerate(ensemble.sources)}
    frames = output_frames(decoded.samples.shape[-1], decoded.sample_rate, output.sample_rate)
    return {stem: render(demucs_stem(stem, sources, mix), ensemble.samplerate, frames, output.sample_rate,
                         output.channels, output.format) for stem in stems}


@pytest.mark.parametrize(("fmt", "channels"), [("wav", 2), ("flac", 1)])
def test_stem_files_equal_the_one_shot_render(single: Ensemble, fmt: str, channels: int) -> None:
    """48 kHz in, resampled to the model and back; the stems within one 16-bit step of today's (the
    statistics differ by a float32 rounding) and nearly all samples the same."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(9.3, 48000, 2), 48000, format=fmt.upper(), subtype="PCM_16")
    data = buffer.getvalue()
    output = Output(fmt, 48000, channels)
    stems = ["vocals", "no_vocals", "drums"]
    expected = one_shot(single, data, stems, output)
    written = {stem: io.BytesIO() for stem in stems}
    seen: list[int] = []
    job = FileJob(single, FileBlocks(data, 20000), [StemTarget(s, written[s]) for s in stems], output)
    frames = separate_to_files(job, progress=seen.append)
    assert seen[-1] == output_frames(frames, 48000, single.samplerate) and seen == sorted(seen)
    for stem in stems:
        ours, _ = sf.read(io.BytesIO(written[stem].getvalue()), dtype="int16", always_2d=True)
        theirs, rate = sf.read(io.BytesIO(expected[stem]), dtype="int16", always_2d=True)
        assert ours.shape == theirs.shape == (frames, channels) and rate == 48000
        difference = np.abs(ours.astype(np.int32) - theirs)
        assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, stem


def test_the_denoised_four_stem_targets_equal_the_one_shot_render(single: Ensemble) -> None:
    """bs_4track's vocals and accompaniment (the other sources summed), denoised, in `fast`'s float16."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(6.0, 44100, 2, seed=3), 44100, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    output = Output("wav", 44100, 2)
    decoded = decode(data, AudioHint(), 600.0, 8)
    mix = to_stereo(decoded.samples)
    separated = separate(single, torch.from_numpy(np.ascontiguousarray(mix))).numpy()
    sources = {name: separated[index].astype(np.float16) for index, name in enumerate(single.sources)}
    expected = {}
    for stem, model in (("vocals", SAMI_MODELS["bs_4track_vocal"]), ("no_vocals", SAMI_MODELS["bs_4track_acc"])):
        target = sami_target(model, model.target, sources, mix, single.samplerate)
        expected[stem] = render(target, single.samplerate, mix.shape[-1], 44100, 2, "wav")
    written = {stem: io.BytesIO() for stem in expected}
    targets = [StemTarget("vocals", written["vocals"], denoise=True),
               StemTarget("no_vocals", written["no_vocals"], from_sources=True, denoise=True)]
    separate_to_files(FileJob(single, FileBlocks(data), targets, output, kept_as=np.float16))
    for stem in expected:
        ours, _ = sf.read(io.BytesIO(written[stem].getvalue()), dtype="int16")
        theirs, _ = sf.read(io.BytesIO(expected[stem]), dtype="int16")
        difference = np.abs(ours.astype(np.int32) - theirs)
        assert ours.shape == theirs.shape and difference.max() <= 1 and np.mean(difference > 0) < 1e-3, stem


def test_blocks_written_are_the_bytes_written_at_once() -> None:
    from namespaces.music_source_separate.audio.encode import encode

    samples = (np.random.default_rng(0).standard_normal((2, 100_003)) * 0.3).astype(np.float32)
    for fmt in ("wav", "flac"):
        buffer = io.BytesIO()
        assert write_blocks(buffer, np.array_split(samples, 13, axis=1), 44100, 2, fmt) == 100_003
        assert buffer.getvalue() == encode(samples, 44100, fmt)
    with pytest.raises(ValueError):
        write_blocks(io.BytesIO(), [samples], 44100, 2, "mp3")


@pytest.mark.parametrize("channels", [1, 2])
def test_a_wav_written_with_its_length_up_front_is_the_bytes_written_at_once(tmp_path: Path, channels: int) -> None:
    from namespaces.music_source_separate.audio.encode import encode
    from namespaces.music_source_separate.streaming.encode import WavWriter, pcm16, wav_header

    samples = (np.random.default_rng(1).standard_normal((channels, 50_001)) * 0.3).astype(np.float32)
    whole = encode(samples, 22050, "wav")
    path = tmp_path / "stem.wav"
    writer = WavWriter(path, 22050, channels, 50_001)
    assert path.read_bytes() == wav_header(50_001, 22050, channels) == whole[:44]  # final from the first byte
    for piece in np.array_split(samples, 7, axis=1):
        writer.write(pcm16(piece))
        assert whole.startswith(path.read_bytes())  # every write is on disk at once, as the file will end
    writer.close()
    assert path.read_bytes() == whole
    with pytest.raises(ValueError, match="50001 frames was given 50002"):
        WavWriter(io.BytesIO(), 22050, channels, 50_001).write(pcm16(np.zeros((channels, 50_002), np.float32)))


def test_a_wav_at_the_models_rate_is_read_again_not_spooled(single: Ensemble, monkeypatch: pytest.MonkeyPatch) -> None:
    """The input is read twice instead of spooled (its statistics from a first pass over the same blocks):
    the files are the bytes of the same samples separated through a spool."""
    from namespaces.music_source_separate.streaming import ArrayBlocks, files

    spooled: list[int] = []

    class CountedSpool(files.Spool):  # type: ignore[misc]
        def __init__(self, *args: object, **kwargs: object) -> None:
            spooled.append(1)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(files, "Spool", CountedSpool)
    buffer = io.BytesIO()
    sf.write(buffer, tone(9.3, single.samplerate, 2), single.samplerate, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    output = Output("wav", single.samplerate, 2)
    written = {}
    for name, source in (("read again", FileBlocks(data)),
                         ("spooled", ArrayBlocks(decode(data, AudioHint(), 60.0).samples, single.samplerate))):
        target = io.BytesIO()
        separate_to_files(FileJob(single, source, [StemTarget("no_vocals", target)], output))
        written[name] = target.getvalue()
    assert spooled == [1]  # the array's, not the wav's
    assert written["read again"] == written["spooled"]
