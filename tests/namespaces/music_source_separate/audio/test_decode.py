"""Tests for audio.decode: round trips through every input format, and every refusal with its kind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.audio import decode as decoding
from namespaces.music_source_separate.audio.decode import INPUT_RATES, DecodedAudio, decode
from namespaces.music_source_separate.audio.encode import encode, encode_av
from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
from namespaces.music_source_separate.audio.sniff import AudioHint, probe_duration, sniff
from tests.namespaces.music_source_separate.audio.conftest import (
    AAC_FRAME,
    AAC_PRIMING,
    MP3_SLACK,
    NO_HINT,
    corr,
    encoded_input,
    id3_end,
    kind_of,
    sine,
    soundfile_bytes,
    strip_id3,
)

pytestmark = pytest.mark.timeout(60)

EMPTY, INVALID = AudioErrorKind.EMPTY, AudioErrorKind.INVALID
TOO_LONG, BAD_HINT = AudioErrorKind.TOO_LONG, AudioErrorKind.BAD_HINT


# --- round trips ------------------------------------------------------------------------------

# Length tolerance and the lag at which the decoded signal lines up with the input:
# wav/flac/ogg/pcm exact; mp3 exact (LAME gapless header); ADTS returns the 1024
# priming samples plus padding to a whole frame; MP4's edit list removes the priming,
# leaving at most one frame of padding.
LENGTHS = {"mp3": (0, 0, 0), "aac": (AAC_PRIMING, AAC_PRIMING + AAC_FRAME - 1, AAC_PRIMING),
           "mp4": (0, AAC_FRAME - 1, 0)}


@pytest.mark.parametrize("rate,channels", [(44100, 2), (22050, 1)])
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "pcm", "mp3", "aac", "mp4"])
def test_decode_round_trip(fmt: str, rate: int, channels: int) -> None:
    x = sine(rate, channels)
    n = x.shape[1]
    data, hint = encoded_input(fmt, x, rate)
    decoded = decode(data, hint, max_seconds=5)
    assert isinstance(decoded, DecodedAudio) and decoded.format == fmt
    assert decoded.sample_rate == rate and decoded.samples.shape[0] == channels
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous
    got = decoded.samples.shape[1]
    if fmt in LENGTHS:
        low, high, lag = LENGTHS[fmt]
        assert n + low <= got <= n + high, (fmt, got - n)
        for ch in range(channels):
            assert corr(decoded.samples[ch, lag:lag + n], x[ch]) > 0.9
    else:
        assert got == n
        if fmt == "ogg":  # lossy, but Vorbis keeps the exact length through its granule positions
            assert min(corr(decoded.samples[ch], x[ch]) for ch in range(channels)) > 0.999
        else:
            assert np.abs(decoded.samples - x).max() < 1e-3


def test_decode_pcm_exact_values() -> None:
    ints = np.tile(np.array([[0, 1], [-32768, 32767], [1000, -1000]], dtype="<i2"), (40, 1))  # 15 ms
    decoded = decode(ints.tobytes(), AudioHint("pcm", 8000, 2), max_seconds=1)
    np.testing.assert_array_equal(decoded.samples, ints.T.astype(np.float32) / 32768)


def test_hint_never_overrides_the_bytes() -> None:
    x = sine(16000, 1)
    decoded = decode(encode(x, 16000, "wav"), AudioHint("pcm", 8000, 2), max_seconds=5)
    assert decoded.format == "wav" and decoded.sample_rate == 16000 and decoded.samples.shape == (1, 16000)


def test_pcm_starting_with_a_sync_word_stays_pcm() -> None:
    x = (sine(44100, 1)[0] * 0.1 * 32767).astype("<i2")
    x[0], x[1] = -1025, 0x6490  # bytes FF FB 90 64: an MPEG-1 layer III header
    data = x.tobytes()
    assert data[:4] == b"\xff\xfb\x90\x64" and sniff(data) is None
    decoded = decode(data, AudioHint("pcm", 44100, 1), max_seconds=5)
    assert decoded.format == "pcm" and decoded.samples.shape == (1, 44100)


def test_headerless_bytes_with_a_layout_hint_are_pcm() -> None:
    """SAMI lists only wav/mp3/aac as formats: a rate and channel count alone mean raw pcm."""
    data = (np.arange(200, dtype="<i2") * 50).tobytes()
    decoded = decode(data, AudioHint(None, 8000, 2), max_seconds=5)
    assert decoded.format == "pcm" and decoded.samples.shape == (2, 100)
    assert kind_of(data, AudioHint("wav", 8000, 2)) is INVALID  # a named other format is not pcm


# --- refusals ---------------------------------------------------------------------------------

def test_pcm_needs_rate_and_channels() -> None:
    data = b"\x01\x02" * 100
    assert kind_of(data, AudioHint("pcm")) is BAD_HINT
    assert kind_of(data, AudioHint("pcm", sample_rate=8000)) is BAD_HINT
    assert kind_of(data, AudioHint("pcm", channels=1)) is BAD_HINT
    assert kind_of(data, AudioHint("pcm", 500, 1)) is BAD_HINT
    assert kind_of(data, AudioHint("pcm", 8000, 0)) is BAD_HINT
    assert kind_of(data, AudioHint("pcm", 8000, 3), max_channels=2) is BAD_HINT


def test_pcm_byte_count_must_fit_the_layout() -> None:
    assert kind_of(b"\x01\x02\x03", AudioHint("pcm", 8000, 1)) is INVALID
    assert kind_of(b"\x01\x02" * 3, AudioHint("pcm", 8000, 2)) is INVALID


def test_garbage_and_empty() -> None:
    assert kind_of(b"definitely not audio" * 50) is INVALID
    assert kind_of(b"") is EMPTY
    assert kind_of(b"", AudioHint("pcm", 8000, 1)) is EMPTY
    assert kind_of(b"\x00\x00" * 10, AudioHint("mp3")) is INVALID  # only pcm uses the hint


@pytest.mark.parametrize(("data", "hint", "max_seconds", "message"), [
    (b"", NO_HINT, 60, "no audio bytes"),
    (b"definitely not audio" * 50, NO_HINT, 60, "unrecognised audio format"),
    (b"\x01\x02" * 100, AudioHint("pcm"), 60, "pcm needs audio_info.sample_rate 8000..192000"),
    (b"\x01\x02" * 100, AudioHint("pcm", 8000, 3), 60, "pcm needs audio_info.channel 1..2"),
    (b"\x01\x02\x03", AudioHint("pcm", 8000, 1), 60, "pcm byte count is not a multiple of 2 (s16le x 1)"),
    (b"\x00\x00" * 8000 * 30, AudioHint("pcm", 8000, 1), 10, "audio lasts 30.0 s, the limit is 10 s"),
    (soundfile_bytes(np.zeros((2, 1), np.float32), 44100), NO_HINT, 60, "audio shorter than 10 ms"),
    (soundfile_bytes(np.zeros((3, 800), np.float32), 8000), NO_HINT, 60, "3 channels, 1..2 are accepted"),
])
def test_refusal_messages(data: bytes, hint: AudioHint, max_seconds: float, message: str) -> None:
    """The messages clients read in status_text, word for word."""
    with pytest.raises(AudioError) as caught:
        decode(data, hint, max_seconds)
    assert str(caught.value) == message


def test_broken_files_are_invalid(samples_by_format: dict[str, bytes]) -> None:
    wav = samples_by_format["wav"]
    assert kind_of(wav[:30]) is INVALID  # truncated header
    assert kind_of(soundfile_bytes(np.zeros((2, 0), np.float32), 44100)) is INVALID  # no samples
    assert kind_of(samples_by_format["flac"][:40]) is INVALID
    assert kind_of(samples_by_format["ogg"][:200]) is INVALID
    mp3 = samples_by_format["mp3"]
    assert kind_of(mp3[:id3_end(mp3)] + b"\x13\x37" * 500) is INVALID
    assert kind_of(samples_by_format["mp4"][:64]) is INVALID


def test_non_finite_samples_are_invalid() -> None:
    x = sine(8000, 1)
    x[0, 100] = np.nan
    assert kind_of(soundfile_bytes(x, 8000, "WAV", "FLOAT")) is INVALID
    x[0, 100] = np.inf
    assert kind_of(soundfile_bytes(x, 8000, "WAV", "FLOAT")) is INVALID


def test_too_many_channels() -> None:
    x = np.zeros((3, 800), np.float32)
    assert kind_of(soundfile_bytes(x, 8000), max_channels=2) is INVALID
    assert decode(soundfile_bytes(x, 8000), NO_HINT, 5, max_channels=3).samples.shape == (3, 800)


def test_long_file_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = soundfile_bytes(np.zeros((1, 8000 * 30), np.float32), 8000)
    assert probe_duration(silent, "wav", NO_HINT) == pytest.approx(30.0)

    def must_not_decode(*args: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(decoding, "_decode_samples", must_not_decode)
    assert kind_of(silent, max_seconds=10) is TOO_LONG
    pcm = b"\x00\x00" * 8000 * 30
    assert kind_of(pcm, AudioHint("pcm", 8000, 1), max_seconds=10) is TOO_LONG
    aac = encode(np.zeros((1, 8000 * 30), np.float32), 8000, "aac")
    assert probe_duration(aac, "aac", NO_HINT) == pytest.approx(30.0, abs=0.3)
    assert kind_of(aac, max_seconds=10) is TOO_LONG


def test_limit_is_inclusive() -> None:
    data = soundfile_bytes(np.zeros((1, 8000 * 2), np.float32) + 0.1, 8000)
    assert decode(data, NO_HINT, max_seconds=2).samples.shape == (1, 16000)
    assert kind_of(data, max_seconds=1.999) is TOO_LONG


def test_concatenated_mp3_with_short_header_is_refused() -> None:
    short = encode_av(sine(22050, 1, 0.5), 22050, "mp3")  # its Xing header says 0.5 s
    long = encode_av(sine(22050, 1, 20.0), 22050, "mp3")
    assert kind_of(short + strip_id3(long), max_seconds=5) is TOO_LONG


@pytest.mark.parametrize("fmt", ["wav", "mp3", "aac", "pcm"])
def test_decoding_stops_when_the_header_lies(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """With the header claiming 0.1 s, the decode loop itself must stop soon after the limit."""
    rate = 16000
    data, hint = encoded_input(fmt, sine(rate, 2, 6.0), rate)
    monkeypatch.setattr(decoding, "probe_duration", lambda *args: 0.1)
    yielded: list[int] = []
    real_chunks = decoding._planar_chunks

    def counting_chunks(*args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        for chunk in real_chunks(*args, **kwargs):
            yielded.append(chunk.shape[1])
            yield chunk

    real_read = sf.SoundFile.read

    def counting_read(self: sf.SoundFile, *args: Any, **kwargs: Any) -> np.ndarray:
        frames = np.asarray(real_read(self, *args, **kwargs))
        yielded.append(frames.shape[0])
        return frames

    monkeypatch.setattr(decoding, "_planar_chunks", counting_chunks)
    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    assert kind_of(data, hint, max_seconds=2) is TOO_LONG
    if fmt == "wav":
        assert yielded == []  # libsndfile's own frame count refuses it before any sample is read
    if fmt in ("mp3", "aac"):
        assert 2 * rate < sum(yielded) <= 2 * rate + 2 * MP3_SLACK


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "pcm"])
def test_decoded_sample_budget(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Many channels at a high rate are refused by the sample budget, not held in memory."""
    monkeypatch.setattr(decoding, "MAX_DECODED_SAMPLES", 20_000)
    x = sine(44100, 2, seconds=0.5)  # 44,100 samples over both channels
    data, hint = encoded_input(fmt, x, 44100)
    assert kind_of(data, hint, max_seconds=60) is INVALID
    short, hint = encoded_input(fmt, sine(44100, 1, seconds=0.1), 44100)
    assert decode(short, hint, max_seconds=60).samples.shape[0] == 1


def test_truncated_wav_is_refused_not_separated_in_part() -> None:
    data = soundfile_bytes(sine(8000, 1, 1.0), 8000)
    assert decode(data, NO_HINT, max_seconds=5).samples.shape == (1, 8000)
    assert kind_of(data[: len(data) // 2]) is INVALID
    assert kind_of(data[:60]) is INVALID


def test_a_few_samples_are_too_short() -> None:
    assert kind_of(soundfile_bytes(np.zeros((2, 1), np.float32), 44100)) is INVALID
    assert decode(soundfile_bytes(np.zeros((1, 441), np.float32), 44100), NO_HINT, 5).samples.shape[1] == 441


def test_input_rates_and_channels_are_bounded() -> None:
    for rate in INPUT_RATES:
        assert decode(soundfile_bytes(sine(rate, 1, 0.05), rate), NO_HINT, 5).sample_rate == rate
    for rate in (INPUT_RATES[0] - 1, INPUT_RATES[1] + 1, 384000):
        assert kind_of(soundfile_bytes(sine(rate, 1, 0.05), rate)) is INVALID
    eight = np.zeros((8, 800), np.float32)
    assert kind_of(soundfile_bytes(eight, 8000)) is INVALID  # SAMI takes mono or stereo
    assert decode(soundfile_bytes(eight, 8000), NO_HINT, 5, max_channels=8).samples.shape == (8, 800)
