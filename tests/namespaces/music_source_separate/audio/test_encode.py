"""Tests for audio.encode: every format it lists decodes back, lossy output lines up, bad calls are refused."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.audio.encode import FORMATS, encode
from namespaces.music_source_separate.audio.sniff import sniff
from tests.namespaces.music_source_separate.audio.conftest import (
    AAC_FRAME,
    AAC_PRIMING,
    CODEC_RATES,
    MP3_SLACK,
    corr,
    pyav_decode,
    sine,
)

pytestmark = pytest.mark.timeout(60)


def check_length(fmt: str, n: int, got: int) -> None:
    if fmt == "aac":
        assert n + AAC_PRIMING <= got < n + AAC_PRIMING + AAC_FRAME, got - n
    elif fmt == "mp3":
        assert n <= got <= n + MP3_SLACK, got - n
    else:
        assert got == n


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", CODEC_RATES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_decodes_back(fmt: str, rate: int, channels: int) -> None:
    x = sine(rate, channels)
    data = encode(x, rate, fmt)
    assert sniff(data) == {"m4a": "mp4"}.get(fmt, fmt)
    y, got_rate = pyav_decode(data)
    assert got_rate == rate and y.shape[0] == channels
    check_length(fmt, x.shape[1], y.shape[1])
    if fmt in ("mp3", "m4a"):
        assert y.shape[1] == x.shape[1]  # LAME's delay and padding, the MP4 edit list, are honoured
    lag = AAC_PRIMING if fmt == "aac" else 0
    assert corr(y[0, lag:lag + x.shape[1]], x[0]) > 0.9


@pytest.mark.parametrize("fmt,lag", [("mp3", 0), ("aac", AAC_PRIMING), ("m4a", 0)])
def test_lossy_output_alignment(fmt: str, lag: int) -> None:
    """Noise (no periodicity to hide a shift) lines up at exactly the documented lag."""
    rate = 22050
    x = (0.3 * np.random.default_rng(2).standard_normal((1, rate))).astype(np.float32)
    y, _ = pyav_decode(encode(x, rate, fmt))
    span = rate - 2 * AAC_FRAME - AAC_PRIMING
    scores = [float(np.dot(y[0, shift:shift + span], x[0, :span])) for shift in range(2 * AAC_FRAME + 1)]
    assert int(np.argmax(scores)) == lag
    assert corr(y[0, lag:lag + span], x[0, :span]) > 0.9


def test_encode_clips_and_validates() -> None:
    loud = np.array([[2.0, -3.0, np.nan, 0.25]], np.float32)
    decoded, _ = sf.read(io.BytesIO(encode(loud, 8000, "wav")), dtype="float32", always_2d=True)
    np.testing.assert_allclose(decoded[:, 0], [32767 / 32768, -1.0, 0.0, 0.25], atol=1e-4)
    with pytest.raises(ValueError):
        encode(loud, 8000, "ogg")
    with pytest.raises(ValueError):
        encode(np.zeros((3, 100), np.float32), 44100, "mp3")
    with pytest.raises(ValueError):
        encode(np.zeros((1, 100), np.float32), 96000, "mp3")


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", CODEC_RATES)
@pytest.mark.parametrize("fmt", ["mp3", "aac", "m4a"])
def test_ffmpeg_decodes_our_output(tmp_path: Path, fmt: str, rate: int, channels: int) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not on PATH: cross-check with a second decoder skipped")
    x = sine(rate, channels)
    source, target = tmp_path / f"x.{fmt}", tmp_path / "x.wav"
    source.write_bytes(encode(x, rate, fmt))
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(source), str(target)]
    subprocess.run(command, check=True, timeout=30)
    info = sf.info(str(target))
    assert info.samplerate == rate and info.channels == channels
    check_length(fmt, x.shape[1], info.frames)
