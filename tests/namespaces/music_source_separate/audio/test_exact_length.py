"""MP3 (through LAME directly) and m4a decode to exactly the samples encoded, in FFmpeg and in
libsndfile, at every rate, for long and very short outputs; the LAME path matches PyAV's in quality
and never holds the GIL for long."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest
import soundfile as sf

from bench.codecs import longest_gil_hold
from namespaces.music_source_separate.audio import encode as encoding
from namespaces.music_source_separate.audio import lame as lame_module
from namespaces.music_source_separate.audio.av_writer import Blocks, m4a_lead
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.encode import encode, encode_av
from namespaces.music_source_separate.audio.lame import Lame, candidates, lame
from namespaces.music_source_separate.audio.lame_tag import (
    crc16,
    delays,
    first_frame,
    lead_for,
    samples_per_frame,
    with_delays,
)
from namespaces.music_source_separate.audio.sniff import AudioHint
from tests.namespaces.music_source_separate.audio.conftest import CODEC_RATES

pytestmark = pytest.mark.timeout(300)
# Lengths around the frame sizes (576 and 1152 samples), the encoders' delays, and a few seconds.
LENGTHS = (1, 2, 46, 47, 100, 575, 577, 1023, 1025, 1151, 1153, 2305, 44_101)


def ffmpeg_frames(tmp_path: Path, data: bytes, fmt: str, channels: int) -> int:
    """Samples FFmpeg decodes (the format named, as a client that asked for it would: its probe
    cannot tell an MP3 of three or four frames by its bytes alone)."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required: bash scripts/install.sh --test installs it"
    source = tmp_path / f"x.{fmt}"
    source.write_bytes(data)
    demuxer = {"mp3": "mp3", "m4a": "mov"}[fmt]
    out = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-f", demuxer, "-i", str(source), "-f", "f32le", "-"],
                         check=True, capture_output=True, timeout=60).stdout
    return len(out) // (4 * channels)


def noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, frames))).astype(np.float32)


@pytest.mark.parametrize("path", ["lame", "pyav"])
@pytest.mark.parametrize("rate", CODEC_RATES)
def test_mp3_decodes_to_exactly_the_samples_encoded(tmp_path: Path, rate: int, path: str) -> None:
    """Through LAME directly, and through PyAV (the path when no LAME library loads)."""
    run = {"lame": encode, "pyav": encode_av}[path]
    wrong = []
    for frames in (*LENGTHS, 3 * rate + 7):
        for channels in (1, 2):
            data = run(noise(frames, channels, frames), rate, "mp3")
            got = (ffmpeg_frames(tmp_path, data, "mp3", channels), sf.info(io.BytesIO(data)).frames)
            if got != (frames, frames):
                wrong.append((frames, channels, got))
    assert wrong == []


@pytest.mark.parametrize("rate", CODEC_RATES)
def test_m4a_decodes_to_exactly_the_samples_encoded(tmp_path: Path, rate: int) -> None:
    wrong = []
    for frames in (*LENGTHS, 3 * rate + 7):
        for channels in (1, 2):
            got = ffmpeg_frames(tmp_path, encode(noise(frames, channels, frames), rate, "m4a"), "m4a", channels)
            if got != frames:
                wrong.append((frames, channels, got))
    assert wrong == []


def test_the_lead_of_an_m4a_ends_the_samples_on_a_frame_boundary() -> None:
    for frames in (1, 1023, 1024, 1025, 2047, 2048, 5000):
        lead = m4a_lead(frames)
        assert (lead + frames) % 1024 == 0 and 0 <= lead < 1024


@pytest.mark.parametrize("fmt", ["mp3", "m4a"])
def test_the_gateway_reads_its_own_output_at_its_length(fmt: str) -> None:
    """A result fed back in (a stem separated again) decodes to its length in the gateway too."""
    x = noise(22_050 + 11, 2)
    decoded = decode(encode(x, 22_050, fmt), AudioHint(), 60.0)
    assert decoded.samples.shape == x.shape


def test_both_lame_libraries_load_and_write_the_same_stream() -> None:
    """The lameenc wheel's LAME comes first; Debian's libmp3lame0 is the fallback. Each gives a
    stream of the same frames and length (the tag names its own version)."""
    paths = candidates()
    assert len(paths) == 2 and paths[0].endswith(".so") and "lameenc" in paths[0], paths
    x = noise(44_100, 2)
    streams = [Lame(path).encode(x, 44_100, 192_000) for path in paths]
    assert [len(stream.data) for stream in streams] == [len(streams[0].data)] * 2
    assert [(stream.delay, stream.padding) for stream in streams] == [(576, streams[0].padding)] * 2
    for stream in streams:
        assert sf.info(io.BytesIO(stream.data)).frames == 44_100
    assert lame() is not None and lame().path == paths[0]


def test_without_a_lame_library_mp3_goes_through_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lame_module, "_loaded", [None])
    x = noise(22_050, 2)
    assert encode(x, 22_050, "mp3") == encode_av(x, 22_050, "mp3")


def test_a_library_without_lame_is_passed_over(tmp_path: Path) -> None:
    not_lame = shutil.which("true")
    assert lame_module._first_loadable([str(tmp_path / "missing.so"), "libc.so.6"]) is None
    assert not_lame is not None


def snr_below(reference: np.ndarray, decoded: np.ndarray, rate: int, cutoff: float = 16_000) -> float:
    """SNR in dB of `decoded` against `reference` over the band below `cutoff` (both (C, n))."""
    spectrum_in, spectrum_out = np.fft.rfft(reference, axis=1), np.fft.rfft(decoded, axis=1)
    band = np.fft.rfftfreq(reference.shape[1], 1 / rate) < cutoff
    signal = np.sum(np.abs(spectrum_in[:, band]) ** 2)
    error = np.sum(np.abs(spectrum_in[:, band] - spectrum_out[:, band]) ** 2)
    return float(10 * np.log10(signal / error))


def music(seconds: float, rate: int) -> np.ndarray:
    """Stereo tones with harmonics, a beat and a little noise: something an MP3 encoder has to work at."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(5)
    notes = np.array([220.0, 277.2, 329.6, 440.0])[(t * 2).astype(int) % 4]
    tone = sum(np.sin(2 * np.pi * k * np.cumsum(notes) / rate) / k for k in (1, 2, 3, 5))
    beat = np.exp(-(t % 0.5) * 20) * np.sin(2 * np.pi * 60 * t)
    left = 0.25 * tone + 0.3 * beat + 0.02 * rng.standard_normal(t.size)
    right = 0.2 * tone + 0.3 * beat + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000])
def test_lame_directly_is_as_good_as_pyav(rate: int) -> None:
    """Same LAME settings, same quality: SNR below 16 kHz within 0.5 dB of the PyAV path's."""
    x = music(5, rate)
    fast, slow = encode(x, rate, "mp3"), encode_av(x, rate, "mp3")
    decoded = [sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0].T for data in (fast, slow)]
    assert [d.shape for d in decoded] == [x.shape, x.shape]
    snr_fast, snr_slow = (snr_below(x, d, rate, min(16_000, rate / 2)) for d in decoded)
    assert snr_fast > 10 and abs(snr_fast - snr_slow) < 0.5, (snr_fast, snr_slow)
    assert abs(len(fast) - len(slow)) < 0.02 * len(slow)  # the same bit rate


def test_a_long_mp3_never_holds_the_gil_for_long() -> None:
    """A thread encoding 60 s of stereo leaves another running: none of its ticks (1 ms apart) waits
    50 ms (ctypes releases the GIL in every call, one second of samples at a time). The same
    measurement is bench/codecs.py's last column."""
    x = music(60, 44_100)
    data, longest = longest_gil_hold(lambda: encode(x, 44_100, "mp3"))
    assert len(data) > 1_000_000 and longest < 0.05, longest


def test_the_tag_crc_is_lames_and_a_new_delay_keeps_it_valid() -> None:
    stream = lame().encode(noise(10, 1), 8000, 128_000)  # short at 8 kHz: encoded after a lead
    assert stream.delay == 576 + lead_for(10, 576, 576) == 623
    first = first_frame(stream.data)
    assert first == slice(0, 576)  # 8 kHz mono at 64 kbit/s: 576-byte frames
    assert delays(stream.data, first) == (623, stream.padding)
    part = stream.data.find(b"LAME")
    assert int.from_bytes(stream.data[part + 34:part + 36], "big") == crc16(stream.data[:part + 34])
    moved = with_delays(stream.data, first, 600)
    assert delays(moved, first) == (600, stream.padding)
    assert int.from_bytes(moved[part + 34:part + 36], "big") == crc16(moved[:part + 34])
    assert crc16(b"123456789") == 0xBB3D  # CRC-16/ARC's check value


def test_no_lead_where_ffmpeg_needs_none() -> None:
    assert lead_for(1, 576, 1152) == 0  # MPEG-1: the skip ends in the first frame
    assert lead_for(47, 576, 576) == 0  # MPEG-2: the output reaches the third frame
    assert lead_for(46, 576, 576) == 47


def test_pyavs_tag_is_found_past_its_id3_tag_and_made_exact() -> None:
    """FFmpeg's mp3 muxer writes an ID3v2 tag, then its Info frame ("Lavf"); its padding fell short
    by up to 528 samples (1153 samples at 44.1 kHz decoded to 1199): encode_av sets it exactly."""
    data = encode_av(noise(1153, 2), 44_100, "mp3")
    first = first_frame(data)
    assert data[:3] == b"ID3" and first.start > 10 and data[first.start] == 0xFF
    delay, padding = delays(data, first)
    assert delay == 576 and (delay + 1153 + padding) % 1152 == 0
    part = data.find(b"Lavf", first.start)
    assert int.from_bytes(data[part + 34:part + 36], "big") == crc16(data[first.start:part + 34])
    with pytest.raises(ValueError, match="layer III"):
        first_frame(b"RIFF" + bytes(100))


def test_an_mp3_of_nothing_or_at_a_rate_that_is_no_integer_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        encode(np.zeros((2, 0), np.float32), 44_100, "mp3")
    for rate in (44_100.0, 44_100.5, True, "44100"):
        for fmt in ("mp3", "m4a", "wav"):
            with pytest.raises(ValueError, match="sample rate"):
                encode(noise(100, 2), rate, fmt)  # type: ignore[arg-type]
    assert encode(noise(100, 2), np.int64(44_100), "mp3") == encode(noise(100, 2), 44_100, "mp3")


def test_silence_around_the_samples_costs_no_copy_of_them() -> None:
    """PyAV's frames come from the lead, the samples and the tail joined end to end: only a frame
    that spans two of them is copied; the others are views of the samples."""
    samples = np.arange(20, dtype=np.float32)[None]
    parts = [np.zeros((1, 3), np.float32), samples, np.zeros((1, 0), np.float32), np.ones((1, 4), np.float32)]
    framer = Blocks(8)
    blocks = [block for part in parts for block in framer.push(part)] + list(framer.rest())
    assert [b.shape[1] for b in blocks] == [8, 8, 8, 3]
    assert np.concatenate(blocks, axis=1).tolist() == np.concatenate(parts, axis=1).tolist()
    assert [np.shares_memory(b, samples) for b in blocks] == [False, True, False, False]


class Writer(Protocol):
    def write(self, pcm: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


def written_in_blocks(writer: Writer, path: Path, pcm: np.ndarray, block: int, seen_at: int | None = None
                      ) -> tuple[bytes, bytes]:
    """`pcm` given to `writer` `block` samples at a time, then finished: the file `path` once `seen_at`
    samples (all, if None) were given, and finished."""
    seen = b""
    try:
        for start in range(0, pcm.shape[1], block):
            writer.write(pcm[:, start:start + block])
            if not seen and start + block >= (pcm.shape[1] if seen_at is None else seen_at):
                seen = path.read_bytes()
        writer.finish()
    finally:
        writer.close()
    return seen, path.read_bytes()


@pytest.mark.parametrize(("rate", "frames", "block"), [(44100, 3 * 44100 + 7, 65536), (22050, 30, 7),
                                                      (8000, 1153, 100), (48000, 2 * 48000, 48000)])
@pytest.mark.parametrize("channels", [1, 2])
def test_an_mp3_written_as_its_samples_come_is_the_one_encoded_at_once(
        tmp_path: Path, rate: int, frames: int, block: int, channels: int) -> None:
    """`Mp3Writer`: blocks of any size give `Lame.encode`'s bytes once finished (its silent lead included);
    before `finish`, what is on disk is the same stream with LAME's blank Info frame, which FFmpeg reads
    as an MP3 from the first byte."""
    library = lame()
    assert library is not None
    pcm = noise(frames, channels, frames)
    bit_rate = encoding.BIT_RATES[channels]
    at_once = library.encode(pcm, rate, bit_rate).data
    path = tmp_path / "stem.mp3"
    growing, finished = written_in_blocks(library.writer(path, channels, rate, bit_rate, frames), path, pcm, block)
    assert finished == at_once
    tag = first_frame(finished)
    assert growing[:tag.start] == finished[:tag.start] and growing[tag.stop:] == finished[tag.stop:len(growing)]
    assert growing[tag] != finished[tag] and len(growing) < len(finished)  # the flush and the tag are to come
    if len(growing) > tag.stop:
        decoded = ffmpeg_frames(tmp_path, growing, "mp3", channels)
        assert 0 < decoded <= frames + 2 * samples_per_frame(rate)
