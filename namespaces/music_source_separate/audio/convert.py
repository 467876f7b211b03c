"""Channel and rate conversion of float32 (channels, frames) samples, and exact output lengths."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import soxr


def to_stereo(samples: np.ndarray) -> np.ndarray:
    """(C, n) -> (2, n) float32.

    Mono is duplicated and stereo returned as is. For C > 2 the channels past the first
    two are summed with gain g = 1/sqrt(2) into both sides, L = ch0 + g*sum(ch2..),
    R = ch1 + g*sum(ch2..), and the result is scaled by 1 / (1 + g*(C-2)) so that inputs
    within [-1, 1] stay within [-1, 1].
    """
    samples = np.asarray(samples, dtype=np.float32)
    channels = samples.shape[0]
    if channels == 0:
        raise ValueError("no channels")
    if channels == 1:
        return np.repeat(samples, 2, axis=0)
    if channels == 2:
        return samples
    gain = np.float32(1 / np.sqrt(2))
    rest = gain * samples[2:].sum(axis=0, dtype=np.float32)
    scale = np.float32(1 / (1 + gain * (channels - 2)))
    return np.stack([samples[0] + rest, samples[1] + rest]) * scale


def output_frames(input_frames: int, rate_in: int, rate_out: int) -> int:
    """round(input_frames * rate_out / rate_in), computed exactly: the length the output must have."""
    return round(Fraction(input_frames * rate_out, rate_in))


def fit_length(samples: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad the last axis to exactly `frames`."""
    have = samples.shape[-1]
    if have == frames:
        return samples
    if have > frames:
        return np.ascontiguousarray(samples[..., :frames])
    padding = [(0, 0)] * (samples.ndim - 1) + [(0, frames - have)]
    return np.pad(samples, padding)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(C, n) at rate_in -> (C, output_frames(n, ...)) at rate_out, soxr "HQ"; same array at equal rates."""
    if rate_in == rate_out:
        return samples
    frames = np.asarray(samples, dtype=np.float32).T  # soxr wants (frames, channels)
    converted = soxr.resample(np.ascontiguousarray(frames), rate_in, rate_out, quality="HQ")
    converted = np.ascontiguousarray(converted.reshape(converted.shape[0], -1).T)
    return fit_length(converted, output_frames(samples.shape[-1], rate_in, rate_out))


def to_channels(stereo: np.ndarray, channels: int) -> np.ndarray:
    """(2, n) -> (1, n), the mean of both sides, or (2, n) unchanged."""
    if channels == 2:
        return stereo
    if channels == 1:
        return np.asarray(stereo.mean(axis=0, keepdims=True, dtype=np.float32))
    raise ValueError(f"channels must be 1 or 2, not {channels}")
