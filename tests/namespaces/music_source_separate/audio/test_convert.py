"""Tests for audio.convert: downmixing, exact output lengths, resampling and channel counts."""

from __future__ import annotations

import numpy as np
import pytest

from namespaces.music_source_separate.audio.convert import fit_length, output_frames, resample, to_channels, to_stereo
from tests.namespaces.music_source_separate.audio.conftest import sine

pytestmark = pytest.mark.timeout(60)


def test_to_stereo() -> None:
    mono = np.arange(5, dtype=np.float32)[None]
    np.testing.assert_array_equal(to_stereo(mono), np.vstack([mono, mono]))
    stereo = np.random.default_rng(0).uniform(-1, 1, (2, 50)).astype(np.float32)
    np.testing.assert_array_equal(to_stereo(stereo), stereo)
    six = np.random.default_rng(1).uniform(-1, 1, (6, 50)).astype(np.float32)
    g = 1 / np.sqrt(2)
    rest = g * six[2:].sum(axis=0)
    expected = np.stack([six[0] + rest, six[1] + rest]) / (1 + 4 * g)
    out = to_stereo(six)
    assert out.shape == (2, 50) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    full = to_stereo(np.ones((6, 10), np.float32))  # the level bound is kept, exactly
    np.testing.assert_allclose(full, 1.0, atol=1e-6)
    assert np.abs(to_stereo(-np.ones((6, 3), np.float32))).max() <= 1.0 + 1e-6


@pytest.mark.parametrize("frames,rate_in,rate_out,expected", [
    (44100, 44100, 48000, 48000), (48000, 48000, 44100, 44100), (1001, 44100, 48000, 1090),
    (7, 44100, 48000, 8), (0, 44100, 8000, 0), (12345, 22050, 44100, 24690), (44100, 44100, 44100, 44100),
    (10 ** 9 + 1, 3, 7, 2333333336),
])
def test_output_frames(frames: int, rate_in: int, rate_out: int, expected: int) -> None:
    assert output_frames(frames, rate_in, rate_out) == expected


@pytest.mark.parametrize("rate_in,rate_out", [
    (44100, 48000), (48000, 44100), (22050, 44100), (8000, 48000), (44100, 16000), (32000, 11025),
])
def test_resample_length_and_pitch(rate_in: int, rate_out: int) -> None:
    x = sine(rate_in, 2, 1.0, freq=1000.0)
    y = resample(x, rate_in, rate_out)
    assert y.shape == (2, output_frames(x.shape[1], rate_in, rate_out)) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y[0]))
    peak_hz = np.argmax(spectrum) * rate_out / y.shape[1]
    assert abs(peak_hz - 1000.0) <= 1.0
    inner = slice(rate_out // 10, -rate_out // 10)
    assert np.sqrt(np.mean(y[0, inner] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    odd = resample(x[:, :1001], rate_in, rate_out)
    assert odd.shape == (2, output_frames(1001, rate_in, rate_out))


def test_resample_identity() -> None:
    x = sine(44100, 2)
    assert resample(x, 44100, 44100) is x


def test_fit_length_and_to_channels() -> None:
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(fit_length(x, 3), x[:, :3])
    padded = fit_length(x, 8)
    assert padded.shape == (2, 8) and not padded[:, 5:].any()
    np.testing.assert_array_equal(padded[:, :5], x)
    assert fit_length(x, 5).shape == (2, 5)
    np.testing.assert_array_equal(to_channels(x, 1), [[2.5, 3.5, 4.5, 5.5, 6.5]])
    assert to_channels(x, 2) is x
