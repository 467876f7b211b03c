"""Tests for audio_io: sniffing, bounded decoding, conversions and encoder output lengths."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate import audio_io, framing
from namespaces.music_source_separate.audio_io import AudioHint, DecodedAudio
from sami_gateway.errors import Code, GatewayError

pytestmark = pytest.mark.timeout(60)

NO_HINT = AudioHint()
CODEC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_SLACK = 1152  # one MPEG-1 layer III frame: the most an mp3 decoder may add past n
AAC_PRIMING = 1024  # ADTS cannot signal the encoder's priming: decoders return it
AAC_FRAME = 1024


# --- helpers ----------------------------------------------------------------------------------

def sine(rate: int, channels: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    """(channels, n) float32: left 0.5*sin, right 0.4*cos (orthogonal, so a channel swap shows)."""
    t = np.arange(int(rate * seconds)) / rate
    rows = [0.5 * np.sin(2 * np.pi * freq * t), 0.4 * np.cos(2 * np.pi * freq * t)]
    return np.stack(rows[:channels]).astype(np.float32)


def soundfile_bytes(x: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x.T, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def m4a_bytes(x: np.ndarray, rate: int) -> bytes:
    """AAC in an MP4 ("ipod") container, written directly with PyAV."""
    layout = "mono" if x.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def pyav_decode(data: bytes) -> tuple[np.ndarray, int]:
    """Independent decode with PyAV (no audio_io code): (channels, n) float32 and the rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def code_of(data: bytes, hint: AudioHint = NO_HINT, max_seconds: float = 60.0, **kwargs: int) -> Code:
    with pytest.raises(GatewayError) as caught:
        audio_io.decode(data, hint, max_seconds, **kwargs)
    text = caught.value.status_text
    assert len(text) < 200 and "Traceback" not in text and "object at 0x" not in text
    return caught.value.code


def id3_end(data: bytes) -> int:
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | byte
    return 10 + size


def strip_id3(data: bytes) -> bytes:
    assert data[:3] == b"ID3"
    return data[id3_end(data):]


# --- sniff ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples_by_format() -> dict[str, bytes]:
    x = sine(44100, 2, 0.5)
    return {
        "wav": audio_io.encode(x, 44100, "wav"),
        "flac": soundfile_bytes(x, 44100, "FLAC"),
        "ogg": soundfile_bytes(x, 44100, "OGG", "VORBIS"),
        "mp3": audio_io.encode(x, 44100, "mp3"),
        "aac": audio_io.encode(x, 44100, "aac"),
        "mp4": m4a_bytes(x, 44100),
    }


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "aac", "mp4"])
def test_sniff_known_formats(samples_by_format: dict[str, bytes], fmt: str) -> None:
    assert audio_io.sniff(samples_by_format[fmt]) == fmt


def test_sniff_rf64_and_unknown() -> None:
    assert audio_io.sniff(b"RF64\xff\xff\xff\xffWAVEds64") == "wav"
    assert audio_io.sniff(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    for data in (b"", b"hello world, not audio", bytes(range(256)) * 4, b"\x00" * 4096, b"ID"):
        assert audio_io.sniff(data) is None


def test_sniff_tells_mp3_from_adts(samples_by_format: dict[str, bytes]) -> None:
    bare_mp3 = strip_id3(samples_by_format["mp3"])
    assert bare_mp3[0] == 0xFF and audio_io.sniff(bare_mp3) == "mp3"
    adts = samples_by_format["aac"]
    assert adts[1] & 0x06 == 0 and audio_io.sniff(adts) == "aac"   # layer bits 00
    id3 = samples_by_format["mp3"][:id3_end(samples_by_format["mp3"])]
    assert audio_io.sniff(id3 + adts) == "aac"  # what follows the tag decides
    assert audio_io.sniff(id3 + b"\x00" * 64) == "mp3"
    # Single handmade headers (too short to need a second frame): MPEG-2 L3, ADTS, MPEG-1 L2.
    assert audio_io.sniff(b"\xff\xf3\x90\x64" + b"\x00" * 8) == "mp3"
    assert audio_io.sniff(b"\xff\xf1\x50\x80\x02\x1f\xfc") == "aac"
    assert audio_io.sniff(b"\xff\xfd\x90\x64" + b"\x00" * 8) is None  # layer II is not accepted
    # An MPEG-1 layer III header whose later bytes would also read as a valid ADTS frame length.
    assert audio_io.sniff(b"\xff\xfb\x90\x64\x01\x00\x00") == "mp3"
    # A lone sync word not followed by a second frame header is not mp3.
    assert audio_io.sniff(b"\xff\xfb\x90\x64" + b"\x00" * 2000) is None


# --- decode round trips -----------------------------------------------------------------------

def encoded_input(fmt: str, x: np.ndarray, rate: int) -> tuple[bytes, AudioHint]:
    if fmt == "pcm":
        ints = np.round(x.T * 32767).astype("<i2")
        return ints.tobytes(), AudioHint("pcm", rate, x.shape[0])
    if fmt == "flac":
        return soundfile_bytes(x, rate, "FLAC"), NO_HINT
    if fmt == "ogg":
        return soundfile_bytes(x, rate, "OGG", "VORBIS"), NO_HINT
    if fmt == "mp4":
        return m4a_bytes(x, rate), NO_HINT
    return audio_io.encode(x, rate, fmt), NO_HINT


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
    decoded = audio_io.decode(data, hint, max_seconds=5)
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
    decoded = audio_io.decode(ints.tobytes(), AudioHint("pcm", 8000, 2), max_seconds=1)
    np.testing.assert_array_equal(decoded.samples, ints.T.astype(np.float32) / 32768)


def test_hint_never_overrides_the_bytes() -> None:
    x = sine(16000, 1)
    decoded = audio_io.decode(audio_io.encode(x, 16000, "wav"), AudioHint("pcm", 8000, 2), max_seconds=5)
    assert decoded.format == "wav" and decoded.sample_rate == 16000 and decoded.samples.shape == (1, 16000)


def test_pcm_starting_with_a_sync_word_stays_pcm() -> None:
    x = (sine(44100, 1)[0] * 0.1 * 32767).astype("<i2")
    x[0], x[1] = -1025, 0x6490  # bytes FF FB 90 64: an MPEG-1 layer III header
    data = x.tobytes()
    assert data[:4] == b"\xff\xfb\x90\x64" and audio_io.sniff(data) is None
    decoded = audio_io.decode(data, AudioHint("pcm", 44100, 1), max_seconds=5)
    assert decoded.format == "pcm" and decoded.samples.shape == (1, 44100)


# --- decode refusals --------------------------------------------------------------------------

def test_pcm_needs_rate_and_channels() -> None:
    data = b"\x01\x02" * 100
    assert code_of(data, AudioHint("pcm")) is Code.ILLEGAL_PAYLOAD
    assert code_of(data, AudioHint("pcm", sample_rate=8000)) is Code.ILLEGAL_PAYLOAD
    assert code_of(data, AudioHint("pcm", channels=1)) is Code.ILLEGAL_PAYLOAD
    assert code_of(data, AudioHint("pcm", 500, 1)) is Code.ILLEGAL_PAYLOAD
    assert code_of(data, AudioHint("pcm", 8000, 0)) is Code.ILLEGAL_PAYLOAD
    assert code_of(data, AudioHint("pcm", 8000, 3), max_channels=2) is Code.ILLEGAL_PAYLOAD


def test_pcm_byte_count_must_fit_the_layout() -> None:
    assert code_of(b"\x01\x02\x03", AudioHint("pcm", 8000, 1)) is Code.ILLEGAL_DATA
    assert code_of(b"\x01\x02" * 3, AudioHint("pcm", 8000, 2)) is Code.ILLEGAL_DATA


def test_garbage_and_empty() -> None:
    assert code_of(b"definitely not audio" * 50) is Code.ILLEGAL_DATA
    assert code_of(b"") is Code.EMPTY_DATA
    assert code_of(b"", AudioHint("pcm", 8000, 1)) is Code.EMPTY_DATA
    assert code_of(b"\x00\x00" * 10, AudioHint("mp3")) is Code.ILLEGAL_DATA  # only pcm uses the hint


def test_broken_files_are_illegal_data(samples_by_format: dict[str, bytes]) -> None:
    wav = samples_by_format["wav"]
    assert code_of(wav[:30]) is Code.ILLEGAL_DATA  # truncated header
    assert code_of(soundfile_bytes(np.zeros((2, 0), np.float32), 44100)) is Code.ILLEGAL_DATA  # no samples
    assert code_of(samples_by_format["flac"][:40]) is Code.ILLEGAL_DATA
    assert code_of(samples_by_format["ogg"][:200]) is Code.ILLEGAL_DATA
    mp3 = samples_by_format["mp3"]
    assert code_of(mp3[:id3_end(mp3)] + b"\x13\x37" * 500) is Code.ILLEGAL_DATA
    assert code_of(samples_by_format["mp4"][:64]) is Code.ILLEGAL_DATA


def test_non_finite_samples_are_illegal_data() -> None:
    x = sine(8000, 1)
    x[0, 100] = np.nan
    assert code_of(soundfile_bytes(x, 8000, "WAV", "FLOAT")) is Code.ILLEGAL_DATA
    x[0, 100] = np.inf
    assert code_of(soundfile_bytes(x, 8000, "WAV", "FLOAT")) is Code.ILLEGAL_DATA


def test_too_many_channels() -> None:
    x = np.zeros((3, 800), np.float32)
    assert code_of(soundfile_bytes(x, 8000), max_channels=2) is Code.ILLEGAL_DATA
    assert audio_io.decode(soundfile_bytes(x, 8000), NO_HINT, 5, max_channels=3).samples.shape == (3, 800)


def test_long_file_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = soundfile_bytes(np.zeros((1, 8000 * 30), np.float32), 8000)
    assert audio_io.probe_duration(silent, "wav", NO_HINT) == pytest.approx(30.0)

    def must_not_decode(*args: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(audio_io, "_decode_samples", must_not_decode)
    assert code_of(silent, max_seconds=10) is Code.EXCEEDED_DURATION
    pcm = b"\x00\x00" * 8000 * 30
    assert code_of(pcm, AudioHint("pcm", 8000, 1), max_seconds=10) is Code.EXCEEDED_DURATION
    aac = audio_io.encode(np.zeros((1, 8000 * 30), np.float32), 8000, "aac")
    assert audio_io.probe_duration(aac, "aac", NO_HINT) == pytest.approx(30.0, abs=0.3)
    assert code_of(aac, max_seconds=10) is Code.EXCEEDED_DURATION


def test_limit_is_inclusive() -> None:
    data = soundfile_bytes(np.zeros((1, 8000 * 2), np.float32) + 0.1, 8000)
    assert audio_io.decode(data, NO_HINT, max_seconds=2).samples.shape == (1, 16000)
    assert code_of(data, max_seconds=1.999) is Code.EXCEEDED_DURATION


def test_concatenated_mp3_with_short_header_is_refused() -> None:
    short = audio_io.encode(sine(22050, 1, 0.5), 22050, "mp3")  # its Xing header says 0.5 s
    long = audio_io.encode(sine(22050, 1, 20.0), 22050, "mp3")
    assert code_of(short + strip_id3(long), max_seconds=5) is Code.EXCEEDED_DURATION


@pytest.mark.parametrize("fmt", ["wav", "mp3", "aac", "pcm"])
def test_decoding_stops_when_the_header_lies(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """With the header claiming 0.1 s, the decode loop itself must stop soon after the limit."""
    rate = 16000
    data, hint = encoded_input(fmt, sine(rate, 2, 6.0), rate)
    monkeypatch.setattr(audio_io, "probe_duration", lambda *args: 0.1)
    yielded: list[int] = []
    real_chunks = audio_io._planar_chunks

    def counting_chunks(*args: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        for chunk in real_chunks(*args, **kwargs):
            yielded.append(chunk.shape[1])
            yield chunk

    real_read = sf.SoundFile.read

    def counting_read(self: sf.SoundFile, *args: Any, **kwargs: Any) -> np.ndarray:
        frames = np.asarray(real_read(self, *args, **kwargs))
        yielded.append(frames.shape[0])
        return frames

    monkeypatch.setattr(audio_io, "_planar_chunks", counting_chunks)
    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    assert code_of(data, hint, max_seconds=2) is Code.EXCEEDED_DURATION
    if fmt == "wav":
        assert yielded == []  # libsndfile's own frame count refuses it before any sample is read
    if fmt in ("mp3", "aac"):
        assert 2 * rate < sum(yielded) <= 2 * rate + 2 * MP3_SLACK


# --- conversions ------------------------------------------------------------------------------

def test_to_stereo() -> None:
    mono = np.arange(5, dtype=np.float32)[None]
    np.testing.assert_array_equal(audio_io.to_stereo(mono), np.vstack([mono, mono]))
    stereo = np.random.default_rng(0).uniform(-1, 1, (2, 50)).astype(np.float32)
    np.testing.assert_array_equal(audio_io.to_stereo(stereo), stereo)
    six = np.random.default_rng(1).uniform(-1, 1, (6, 50)).astype(np.float32)
    g = 1 / np.sqrt(2)
    rest = g * six[2:].sum(axis=0)
    expected = np.stack([six[0] + rest, six[1] + rest]) / (1 + 4 * g)
    out = audio_io.to_stereo(six)
    assert out.shape == (2, 50) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    full = audio_io.to_stereo(np.ones((6, 10), np.float32))  # the level bound is kept, exactly
    np.testing.assert_allclose(full, 1.0, atol=1e-6)
    assert np.abs(audio_io.to_stereo(-np.ones((6, 3), np.float32))).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("frames,rate_in,rate_out,expected", [
    (44100, 44100, 48000, 48000), (48000, 48000, 44100, 44100), (1001, 44100, 48000, 1090),
    (7, 44100, 48000, 8), (0, 44100, 8000, 0), (12345, 22050, 44100, 24690), (44100, 44100, 44100, 44100),
    (10 ** 9 + 1, 3, 7, 2333333336),
])
def test_output_frames(frames: int, rate_in: int, rate_out: int, expected: int) -> None:
    assert audio_io.output_frames(frames, rate_in, rate_out) == expected


@pytest.mark.parametrize("rate_in,rate_out", [
    (44100, 48000), (48000, 44100), (22050, 44100), (8000, 48000), (44100, 16000), (32000, 11025),
])
def test_resample_length_and_pitch(rate_in: int, rate_out: int) -> None:
    x = sine(rate_in, 2, 1.0, freq=1000.0)
    y = audio_io.resample(x, rate_in, rate_out)
    assert y.shape == (2, audio_io.output_frames(x.shape[1], rate_in, rate_out)) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y[0]))
    peak_hz = np.argmax(spectrum) * rate_out / y.shape[1]
    assert abs(peak_hz - 1000.0) <= 1.0
    inner = slice(rate_out // 10, -rate_out // 10)
    assert np.sqrt(np.mean(y[0, inner] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    odd = audio_io.resample(x[:, :1001], rate_in, rate_out)
    assert odd.shape == (2, audio_io.output_frames(1001, rate_in, rate_out))


def test_resample_identity() -> None:
    x = sine(44100, 2)
    assert audio_io.resample(x, 44100, 44100) is x


def test_fit_length_and_to_channels() -> None:
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(audio_io.fit_length(x, 3), x[:, :3])
    padded = audio_io.fit_length(x, 8)
    assert padded.shape == (2, 8) and not padded[:, 5:].any()
    np.testing.assert_array_equal(padded[:, :5], x)
    assert audio_io.fit_length(x, 5).shape == (2, 5)
    np.testing.assert_array_equal(audio_io.to_channels(x, 1), [[2.5, 3.5, 4.5, 5.5, 6.5]])
    assert audio_io.to_channels(x, 2) is x


# --- encode -----------------------------------------------------------------------------------

def check_length(fmt: str, n: int, got: int) -> None:
    if fmt == "aac":
        assert n + AAC_PRIMING <= got < n + AAC_PRIMING + AAC_FRAME, got - n
    elif fmt == "mp3":
        assert n <= got <= n + MP3_SLACK, got - n
    else:
        assert got == n


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", CODEC_RATES)
@pytest.mark.parametrize("fmt", audio_io.FORMATS_OUT)
def test_encode_decodes_back(fmt: str, rate: int, channels: int) -> None:
    x = sine(rate, channels)
    data = audio_io.encode(x, rate, fmt)
    assert audio_io.sniff(data) == fmt
    y, got_rate = pyav_decode(data)
    assert got_rate == rate and y.shape[0] == channels
    check_length(fmt, x.shape[1], y.shape[1])
    if fmt == "mp3":
        assert y.shape[1] == x.shape[1]  # the LAME header's delay and padding are honoured
    lag = AAC_PRIMING if fmt == "aac" else 0
    assert corr(y[0, lag:lag + x.shape[1]], x[0]) > 0.9


@pytest.mark.parametrize("fmt,lag", [("mp3", 0), ("aac", AAC_PRIMING)])
def test_lossy_output_alignment(fmt: str, lag: int) -> None:
    """Noise (no periodicity to hide a shift) lines up at exactly the documented lag."""
    rate = 22050
    x = (0.3 * np.random.default_rng(2).standard_normal((1, rate))).astype(np.float32)
    y, _ = pyav_decode(audio_io.encode(x, rate, fmt))
    span = rate - 2 * AAC_FRAME - AAC_PRIMING
    scores = [float(np.dot(y[0, shift:shift + span], x[0, :span])) for shift in range(2 * AAC_FRAME + 1)]
    assert int(np.argmax(scores)) == lag
    assert corr(y[0, lag:lag + span], x[0, :span]) > 0.9


def test_encode_clips_and_validates() -> None:
    loud = np.array([[2.0, -3.0, np.nan, 0.25]], np.float32)
    decoded, _ = sf.read(io.BytesIO(audio_io.encode(loud, 8000, "wav")), dtype="float32", always_2d=True)
    np.testing.assert_allclose(decoded[:, 0], [32767 / 32768, -1.0, 0.0, 0.25], atol=1e-4)
    with pytest.raises(ValueError):
        audio_io.encode(loud, 8000, "ogg")
    with pytest.raises(ValueError):
        audio_io.encode(np.zeros((3, 100), np.float32), 44100, "mp3")
    with pytest.raises(ValueError):
        audio_io.encode(np.zeros((1, 100), np.float32), 96000, "mp3")


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", CODEC_RATES)
@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_ffmpeg_decodes_our_output(tmp_path: Path, fmt: str, rate: int, channels: int) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not on PATH: cross-check with a second decoder skipped")
    x = sine(rate, channels)
    source, target = tmp_path / f"x.{fmt}", tmp_path / "x.wav"
    source.write_bytes(audio_io.encode(x, rate, fmt))
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(source), str(target)]
    subprocess.run(command, check=True, timeout=30)
    info = sf.info(str(target))
    assert info.samplerate == rate and info.channels == channels
    check_length(fmt, x.shape[1], info.frames)


def test_headerless_bytes_with_a_layout_hint_are_pcm() -> None:
    """SAMI lists only wav/mp3/aac as formats: a rate and channel count alone mean raw pcm."""
    data = (np.arange(200, dtype="<i2") * 50).tobytes()
    decoded = audio_io.decode(data, AudioHint(None, 8000, 2), max_seconds=5)
    assert decoded.format == "pcm" and decoded.samples.shape == (2, 100)
    assert code_of(data, AudioHint("wav", 8000, 2)) is Code.ILLEGAL_DATA  # a named other format is not pcm


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "pcm"])
def test_decoded_sample_budget(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    """Many channels at a high rate are refused by the sample budget, not held in memory."""
    monkeypatch.setattr(audio_io, "MAX_DECODED_SAMPLES", 20_000)
    x = sine(44100, 2, seconds=0.5)  # 44,100 samples over both channels
    data, hint = encoded_input(fmt, x, 44100)
    assert code_of(data, hint, max_seconds=60) is Code.ILLEGAL_DATA
    short, hint = encoded_input(fmt, sine(44100, 1, seconds=0.1), 44100)
    assert audio_io.decode(short, hint, max_seconds=60).samples.shape[0] == 1


def test_truncated_wav_is_refused_not_separated_in_part() -> None:
    data = soundfile_bytes(sine(8000, 1, 1.0), 8000)
    assert audio_io.decode(data, NO_HINT, max_seconds=5).samples.shape == (1, 8000)
    assert code_of(data[: len(data) // 2]) is Code.ILLEGAL_DATA
    assert code_of(data[:60]) is Code.ILLEGAL_DATA


def test_a_few_samples_are_too_short() -> None:
    assert code_of(soundfile_bytes(np.zeros((2, 1), np.float32), 44100)) is Code.ILLEGAL_DATA
    assert audio_io.decode(soundfile_bytes(np.zeros((1, 441), np.float32), 44100), NO_HINT, 5).samples.shape[1] == 441


# --- framing: files cut short or damaged ------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "aac", "mp4"])
def test_files_cut_short_are_refused(samples_by_format: dict[str, bytes], fmt: str) -> None:
    data = samples_by_format[fmt]
    assert audio_io.decode(data, NO_HINT, 5).samples.shape[1] > 0
    for keep in (len(data) - 1, len(data) * 2 // 3):
        assert code_of(data[:keep]) is Code.ILLEGAL_DATA, keep


def ape_tag(header: bool) -> bytes:
    """An APEv2 tag with one item: optional header, the item, the footer (sizes exclude the header)."""
    item = (5).to_bytes(4, "little") + bytes(4) + b"Title\0" + b"hello"
    size = len(item) + 32

    def block(is_header: bool) -> bytes:
        flags = (1 << 31 if header else 0) | (1 << 29 if is_header else 0)
        return (b"APETAGEX" + (2000).to_bytes(4, "little") + size.to_bytes(4, "little")
                + (1).to_bytes(4, "little") + flags.to_bytes(4, "little") + bytes(8))

    return (block(True) if header else b"") + item + block(False)


def id3v2_appended() -> bytes:
    """An ID3v2.4 tag with a footer ("3DI"), as taggers may append one to the end of a file."""
    body = b"TIT2" + (6).to_bytes(4, "big") + b"\0\0" + b"\x03hello"
    size = bytes([0, 0, 0, len(body)])
    return b"ID3\x04\0\x10" + size + body + b"3DI\x04\0\x10" + size


LYRICS3V2 = b"LYRICSBEGIN" + b"IND00003" + b"110" + b"%06d" % (11 + 11) + b"LYRICS200"
TRAILERS = {"id3v1": b"TAG" + bytes(125), "ape with header": ape_tag(True), "ape footer only": ape_tag(False),
            "lyrics3 v2 then id3v1": LYRICS3V2 + b"TAG" + bytes(125), "id3v2 with footer": id3v2_appended(),
            "ape then id3v1": ape_tag(True) + b"TAG" + bytes(125)}


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_tags_after_the_last_frame_are_skipped(samples_by_format: dict[str, bytes], fmt: str, trailer: str) -> None:
    """Players skip the metadata blocks written after the audio; the decoder never sees them."""
    whole = audio_io.decode(samples_by_format[fmt], NO_HINT, 5).samples
    tagged = audio_io.decode(samples_by_format[fmt] + TRAILERS[trailer], NO_HINT, 5).samples
    np.testing.assert_array_equal(tagged, whole)


def test_what_no_tag_explains_is_refused(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    assert code_of(mp3 + b"junk" * 40) is Code.ILLEGAL_DATA
    assert code_of(mp3 + b"TAG" + bytes(125) + b"junk") is Code.ILLEGAL_DATA


def test_concatenated_mp3_files_with_their_tags_decode_in_full(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    one = audio_io.decode(mp3, NO_HINT, 5).samples.shape[1]
    assert audio_io.decode(mp3 + mp3, NO_HINT, 5).samples.shape[1] >= 2 * one


def test_chained_ogg_is_refused_not_cut_to_its_first_link(samples_by_format: dict[str, bytes]) -> None:
    """libsndfile would decode only the first stream of a chain: refused with a clear reason."""
    ogg = samples_by_format["ogg"]
    with pytest.raises(GatewayError, match="chained Ogg"):
        audio_io.decode(ogg + ogg, NO_HINT, 5)


@pytest.mark.parametrize("declared", [0, 0x7FFFFF00, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF])
def test_wav_with_a_streaming_placeholder_length_is_read_to_the_end(declared: int) -> None:
    """arecord and other stream writers put about 2 GiB in the `data` size: read what is there."""
    data = bytearray(soundfile_bytes(sine(8000, 1, 1.0), 8000))
    position = data.index(b"data")
    data[position + 4:position + 8] = declared.to_bytes(4, "little")
    assert audio_io.decode(bytes(data), NO_HINT, 5).samples.shape == (1, 8000)


def test_many_tiny_blocks_are_refused_quickly() -> None:
    """A large file of minimal boxes or chunks costs a bounded walk, not minutes in FFmpeg."""
    boxes = b"\0\0\0\x18ftypM4A \0\0\0\0M4A mp42" + b"\0\0\0\x08free" * 2_000_000
    started = time.perf_counter()
    with pytest.raises(GatewayError, match="top-level MP4 boxes"):
        audio_io.decode(boxes, NO_HINT, 600)
    chunks = b"RIFF\xff\xff\xff\x7fWAVE" + b"junk\0\0\0\0" * 2_000_000
    with pytest.raises(GatewayError, match="chunks before the audio"):
        audio_io.decode(chunks, NO_HINT, 600)
    assert time.perf_counter() - started < 5


def test_mp3_padding_after_its_tag_is_accepted(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    tag_end = id3_end(mp3)
    padded = mp3[:tag_end] + bytes(700) + mp3[tag_end:]  # zeros a tagger left after the tag
    # FFmpeg finds the frames, though no longer the LAME gapless trim: every frame is decoded.
    assert audio_io.decode(padded, NO_HINT, 5).samples.shape == (2, 21 * 1152)
    with pytest.raises(framing.Damaged, match="no MPEG frame where the stream starts"):
        framing.whole(mp3[:tag_end] + b"\x13\x37" * 500, "mp3")


def test_flac_of_unknown_length_is_decoded_and_bounded() -> None:
    """STREAMINFO's total of 0 means "unknown" (stream encoders write it): decoded in full,
    the duration limit applied while decoding, and a cut-short one still refused."""
    data = bytearray(soundfile_bytes(sine(44100, 2, 1.0), 44100, "FLAC"))
    field = int.from_bytes(data[18:26], "big")
    data[18:26] = (field & ~((1 << 36) - 1)).to_bytes(8, "big")
    assert audio_io.decode(bytes(data), NO_HINT, 5).samples.shape == (2, 44100)
    assert code_of(bytes(data), max_seconds=0.5) is Code.EXCEEDED_DURATION
    assert code_of(bytes(data[: len(data) // 2])) is Code.ILLEGAL_DATA


def test_ogg_without_its_end_of_stream_page_is_refused(samples_by_format: dict[str, bytes]) -> None:
    data = samples_by_format["ogg"]
    last = data.rindex(b"OggS")
    assert data[last + 5] & 0x04  # the last page carries the end-of-stream flag
    assert code_of(data[:last]) is Code.ILLEGAL_DATA  # whole pages, but the stream never ends


def test_mp3_cut_between_frames_is_refused_by_its_frame_count(samples_by_format: dict[str, bytes]) -> None:
    data = samples_by_format["mp3"]
    position = framing.skip_id3(data)
    for _ in range(5):
        position += framing.mp3_frame_length(data, position) or 0
    with pytest.raises(framing.Damaged, match="^4 MPEG frames of the 21 its header declares$"):
        framing.whole(data[:position], "mp3")


@pytest.mark.parametrize(("name", "args", "suffix"), [
    ("mp3 without a Xing header", ["-c:a", "libmp3lame", "-write_xing", "0"], "mp3"),
    ("mp3 vbr", ["-c:a", "libmp3lame", "-q:a", "2"], "mp3"),
    ("opus in ogg", ["-c:a", "libopus"], "ogg"),
    ("vorbis in ogg", ["-c:a", "libvorbis"], "ogg"),
    ("flac", ["-c:a", "flac"], "flac"),
    ("adts", ["-c:a", "aac", "-f", "adts"], "aac"),
    ("mp4 with the index first", ["-c:a", "aac", "-movflags", "+faststart"], "mp4"),
    ("m4a", ["-c:a", "aac"], "m4a"),
])
def test_whole_files_from_ffmpeg_are_accepted(tmp_path: Path, name: str, args: list[str], suffix: str) -> None:
    """Files from another muxer pass the framing walks: the checks refuse damage, not producers."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required: bash scripts/install.sh --test installs it"
    source, output = tmp_path / "in.wav", tmp_path / f"out.{suffix}"
    source.write_bytes(soundfile_bytes(sine(44100, 2, 1.0), 44100))
    subprocess.run([ffmpeg, "-v", "error", "-i", str(source), *args, str(output)], check=True, timeout=60)
    data = output.read_bytes()
    assert framing.whole(data, audio_io.sniff(data) or "") is data, name
    decoded = audio_io.decode(data, NO_HINT, 5)
    assert decoded.samples.shape[0] == 2 and decoded.samples.shape[1] >= decoded.sample_rate  # all of 1 s


def test_input_rates_and_channels_are_bounded() -> None:
    for rate in audio_io.INPUT_RATES:
        assert audio_io.decode(soundfile_bytes(sine(rate, 1, 0.05), rate), NO_HINT, 5).sample_rate == rate
    for rate in (audio_io.INPUT_RATES[0] - 1, audio_io.INPUT_RATES[1] + 1, 384000):
        assert code_of(soundfile_bytes(sine(rate, 1, 0.05), rate)) is Code.ILLEGAL_DATA
    eight = np.zeros((8, 800), np.float32)
    assert code_of(soundfile_bytes(eight, 8000)) is Code.ILLEGAL_DATA  # SAMI takes mono or stereo
    assert audio_io.decode(soundfile_bytes(eight, 8000), NO_HINT, 5, max_channels=8).samples.shape == (8, 800)
