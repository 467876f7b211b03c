"""Tests for the stationary-noise spectral gate used by the bs_4track_* models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from namespaces.music_source_separate.engine import denoise as denoise_module
from namespaces.music_source_separate.engine.denoise import DenoiseSettings, denoise

RATE = 44100
TONES_HZ = (220.0, 1000.0, 3000.0)
HUM_HZ = (50.0, 100.0, 150.0, 200.0, 250.0)


def _db(ratio: float) -> float:
    return float(10.0 * np.log10(ratio))


def _psd(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD averaged over channels (~2.7 Hz resolution)."""
    freqs, psd = welch(audio.astype(np.float64), RATE, nperseg=16384, axis=-1)
    return freqs, psd.reshape(-1, freqs.size).mean(axis=0)


def _band_energy(freqs: np.ndarray, psd: np.ndarray, centre: float, half_width: float) -> float:
    return float(psd[np.abs(freqs - centre) <= half_width].sum())


def _tones_in_noise(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """Stereo sum of three tones plus white noise 30 dB below the tones' power."""
    t = np.arange(int(seconds * RATE)) / RATE
    tones = np.sum([0.2 * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(TONES_HZ)], axis=0)
    noise_power = np.mean(tones**2) / 10.0**3.0
    noise = np.random.default_rng(seed).standard_normal((2, t.size)) * np.sqrt(noise_power)
    noisy: np.ndarray = (tones + noise).astype(np.float32)
    return noisy


def _music_with_hum(seconds: float = 6.0, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(music-like notes, stationary 50 Hz hum with harmonics), mono, float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    music = np.zeros_like(t)
    note, gap = int(0.3 * RATE), int(0.1 * RATE)
    envelope = np.minimum(1.0, np.arange(note) / (0.01 * RATE)) * np.exp(-np.arange(note) / (0.15 * RATE))
    for start in range(0, t.size - note, note + gap):
        f0 = rng.choice([330.0, 392.0, 440.0, 523.25, 587.33, 659.26, 783.99, 880.0])
        tn = t[start : start + note]
        phases = rng.uniform(0, 2 * np.pi, size=4)
        partials = np.sum(
            [0.3 / k * np.sin(2 * np.pi * k * f0 * tn + phases[k - 1]) for k in range(1, 5)], axis=0
        )
        music[start : start + note] += envelope * partials
    hum = np.sum([0.02 / (1 + k) * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(HUM_HZ)], axis=0)
    return music, hum


def test_acceptance_white_noise_floor_drops_10_db_and_tones_keep_energy() -> None:
    noisy = _tones_in_noise()
    cleaned = denoise(noisy, RATE)
    freqs, before = _psd(noisy)
    _, after = _psd(cleaned)
    far = freqs > 20.0
    for tone in TONES_HZ:
        far &= np.abs(freqs - tone) > 100.0
    floor_drop = _db(before[far].mean() / after[far].mean())
    assert floor_drop >= 10.0, f"noise floor lowered by only {floor_drop:.2f} dB"
    for tone in TONES_HZ:
        change = _db(_band_energy(freqs, after, tone, 10.0) / _band_energy(freqs, before, tone, 10.0))
        assert abs(change) < 1.0, f"{tone} Hz tone energy changed by {change:.3f} dB"


def test_zero_reduction_is_identity() -> None:
    noisy = _tones_in_noise(seconds=2.0)[:, : 2 * RATE + 123]
    cleaned = denoise(noisy, RATE, DenoiseSettings(reduction_db=0.0))
    np.testing.assert_allclose(cleaned, noisy, rtol=0.0, atol=1e-5)


def test_gate_that_never_closes_reconstructs_input() -> None:
    noisy = _tones_in_noise(seconds=2.0)[0, : 2 * RATE + 77]
    cleaned = denoise(noisy, RATE, DenoiseSettings(threshold_db=-300.0))
    np.testing.assert_allclose(cleaned, noisy, rtol=0.0, atol=1e-5)


def test_chunked_processing_matches_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    noisy = _tones_in_noise(seconds=2.0)[0]
    monkeypatch.setattr(denoise_module, "_CHUNK_FRAMES", 10**6)
    whole = denoise(noisy, RATE)
    monkeypatch.setattr(denoise_module, "_CHUNK_FRAMES", 7)
    chunked = denoise(noisy, RATE)
    np.testing.assert_allclose(chunked, whole, rtol=0.0, atol=1e-6)


def test_zeros_stay_zeros() -> None:
    silence = np.zeros((2, RATE), dtype=np.float32)
    cleaned = denoise(silence, RATE)
    assert np.all(np.isfinite(cleaned))
    assert not np.any(cleaned)


@pytest.mark.parametrize("shape", [(RATE + 321,), (2, RATE + 321)])
def test_shape_and_dtype_are_preserved(shape: tuple[int, ...]) -> None:
    noisy = np.random.default_rng(2).standard_normal(shape).astype(np.float32) * 0.1
    cleaned = denoise(noisy, RATE)
    assert cleaned.shape == noisy.shape
    assert cleaned.dtype == np.float32
    assert np.all(np.isfinite(cleaned))
    assert np.sum(cleaned.astype(np.float64) ** 2) < np.sum(noisy.astype(np.float64) ** 2)


def test_input_shorter_than_fft_is_returned_unchanged() -> None:
    short = np.random.default_rng(3).standard_normal((2, 1000)).astype(np.float32)
    cleaned = denoise(short, RATE)
    assert cleaned.shape == short.shape and cleaned.dtype == np.float32
    np.testing.assert_array_equal(cleaned, short)
    assert cleaned is not short


def test_stationary_hum_under_music_drops_10_db_and_music_survives() -> None:
    music, hum = _music_with_hum()
    noise = np.random.default_rng(4).standard_normal(music.size) * 1e-3
    noisy = (music + hum + noise).astype(np.float32)
    cleaned = denoise(noisy, RATE)
    freqs, before = _psd(noisy)
    _, after = _psd(cleaned)
    hum_before = sum(_band_energy(freqs, before, f, 4.0) for f in HUM_HZ)
    hum_after = sum(_band_energy(freqs, after, f, 4.0) for f in HUM_HZ)
    hum_drop = _db(hum_before / hum_after)
    assert hum_drop >= 10.0, f"hum lowered by only {hum_drop:.2f} dB"
    music_band = (freqs > 300.0) & (freqs < 4000.0)
    music_change = _db(after[music_band].sum() / before[music_band].sum())
    assert abs(music_change) < 1.0, f"music energy changed by {music_change:.3f} dB"


def test_loud_burst_keeps_its_energy_while_noise_around_it_drops() -> None:
    t = np.arange(3 * RATE) / RATE
    noise = np.random.default_rng(5).standard_normal(t.size) * 0.01
    burst = np.where((t >= 1.25) & (t < 1.75), 0.3 * np.sin(2 * np.pi * 1000.0 * t), 0.0)
    noisy = (noise + burst).astype(np.float32)
    cleaned = denoise(noisy, RATE).astype(np.float64)
    during = slice(int(1.25 * RATE), int(1.75 * RATE))
    change = _db(np.sum(cleaned[during] ** 2) / np.sum(noisy[during].astype(np.float64) ** 2))
    assert abs(change) < 1.0, f"burst energy changed by {change:.3f} dB"
    quiet = slice(0, RATE)
    drop = _db(np.sum(noisy[quiet].astype(np.float64) ** 2) / np.sum(cleaned[quiet] ** 2))
    assert drop >= 10.0, f"noise outside the burst lowered by only {drop:.2f} dB"


def test_leading_digital_silence_does_not_hide_the_noise_floor() -> None:
    noisy = _tones_in_noise(seconds=4.0)[0]
    noisy[: 2 * RATE] = 0.0
    cleaned = denoise(noisy, RATE)
    freqs, before = _psd(noisy[2 * RATE :])
    _, after = _psd(cleaned[2 * RATE + 4096 :])
    far = (freqs > 4000.0) & (freqs < 20000.0)
    assert _db(before[far].mean() / after[far].mean()) >= 10.0
    assert not np.any(cleaned[:RATE])


def test_channels_get_their_own_noise_profile() -> None:
    noisy = _tones_in_noise(seconds=3.0)
    noisy[1] = noisy[0] * 0.01  # same material 40 dB quieter: a shared profile would leave it ungated
    cleaned = denoise(noisy, RATE)
    freqs, before = _psd(noisy[1])
    _, after = _psd(cleaned[1])
    far = (freqs > 4000.0) & (freqs < 20000.0)
    assert _db(before[far].mean() / after[far].mean()) >= 10.0


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        DenoiseSettings(n_fft=2000, hop=512)
    with pytest.raises(ValueError):
        DenoiseSettings(reduction_db=-3.0)
    with pytest.raises(ValueError):
        denoise(np.zeros((1, 2, 3), dtype=np.float32), RATE)
