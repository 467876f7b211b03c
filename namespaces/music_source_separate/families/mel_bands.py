"""The Mel-Band RoFormer's bands: which STFT bins each of `num_bands` overlapping mel bands covers.

A bin belongs to a band where the band's triangular mel filter (Slaney's mel scale and area
normalisation, float32 weights, as librosa's `filters.mel` computes them, which the checkpoints
were trained with) is positive; the first bin always belongs to the first band and the last bin
to the last.
"""

from __future__ import annotations

import math

import numpy as np

LINEAR_HZ_PER_MEL = 200.0 / 3  # Slaney's scale: linear below 1 kHz
LOG_START_HZ = 1000.0
LOG_STEP = math.log(6.4) / 27.0  # ... and logarithmic above


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    mel = hz / LINEAR_HZ_PER_MEL
    start = LOG_START_HZ / LINEAR_HZ_PER_MEL
    above = hz >= LOG_START_HZ
    mel[above] = start + np.log(hz[above] / LOG_START_HZ) / LOG_STEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = LINEAR_HZ_PER_MEL * mel
    start = LOG_START_HZ / LINEAR_HZ_PER_MEL
    above = mel >= start
    hz[above] = LOG_START_HZ * np.exp(LOG_STEP * (mel[above] - start))
    return hz


def mel_filters(sample_rate: int, n_fft: int, bands: int) -> np.ndarray:
    """(bands, n_fft // 2 + 1) float32 triangular filters from 0 Hz to Nyquist, area-normalised."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([sample_rate / 2.0]))[0],
                                  bands + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, bins)
    weights = np.zeros((bands, len(bins)), dtype=np.float32)
    for band in range(bands):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        weights[band] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:bands + 2] - edges[:bands]))[:, np.newaxis]
    return weights


def band_membership(sample_rate: int, n_fft: int, bands: int) -> np.ndarray:
    """(bands, bins) booleans: which bins each band covers."""
    member = mel_filters(sample_rate, n_fft, bands) > 0
    member[0, 0] = True
    member[-1, -1] = True
    return member
