"""Stationary-noise reduction for separated stems: spectral gating against a per-frequency noise profile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sp_fft
from scipy.ndimage import convolve1d
from scipy.signal import get_window
from scipy.special import expit

_EPS_POWER = 1e-20  # keeps log10 finite on digital silence
_SILENT_FRAME_POWER = 1e-12  # mean square below -120 dBFS: digital silence, left out of the noise profile
_MIN_FLOOR_HALF_WIDTH = 24  # bins; wider than twice a strong tone's Hann skirt, so tones never set the floor
_CHUNK_FRAMES = 2048  # STFT frames gated at a time: bounds memory on long inputs
_MAINS_HZ = (50.0, 60.0)
_HUM_FAMILY_HARMONICS = 4  # a mains family counts as present when >= 2 of its first 4 harmonics are
_HUM_FAMILY_MIN_HITS = 2
_HUM_SEGMENT_SECONDS = 0.35  # fine-resolution analysis for hum detection (~2.7 Hz bins at 44.1 kHz)
_HUM_MAX_SEGMENTS = 128
_HUM_FLOOR_HALF_HZ = 25.0  # neighbourhood a hum line must stand out from
_HUM_LINE_HALF_BINS = 4  # Blackman-Harris main lobe, left out of that neighbourhood
_HUM_MARK_HALF_BINS = 2  # STFT bins marked either side of a detected harmonic (Hann main lobe)


@dataclass(frozen=True)
class DenoiseSettings:
    """Parameters of the stationary spectral gate; levels in dB, widths in STFT frames / bins."""

    n_fft: int = 2048
    hop: int = 512
    noise_percentile: float = 10.0  # per-bin percentile of the level over time taken as the noise floor
    threshold_db: float = 6.0  # margin above the estimated mean noise power that counts as signal
    reduction_db: float = 24.0  # attenuation of fully gated bins (never to zero)
    softness_db: float = 2.0  # width of the sigmoid transition around the threshold
    smooth_time_frames: int = 3  # half-width of the triangular mask smoothing over time
    smooth_freq_bins: int = 2  # half-width of the triangular mask smoothing over frequency
    floor_smoothing_octaves: float = 1.0 / 3.0  # width of the running median giving the broadband floor
    peak_tolerance_db: float = 6.0  # stationary peaks this far above the broadband floor are music, not noise
    remove_hum: bool = True  # treat stationary 50/60 Hz harmonic combs as noise
    hum_max_hz: float = 1000.0  # highest mains harmonic treated as hum
    hum_detect_db: float = 6.0  # a harmonic is hum when it stands this far above its neighbourhood
    max_profile_frames: int = 4096  # frames (evenly spread over the signal) used for the noise profile

    def __post_init__(self) -> None:
        if self.n_fft < 16 or self.hop < 1 or self.n_fft % self.hop != 0 or self.n_fft // self.hop < 2:
            raise ValueError("n_fft must be >= 16 and a multiple of hop with n_fft // hop >= 2")
        if not 0.0 < self.noise_percentile < 100.0:
            raise ValueError("noise_percentile must lie strictly between 0 and 100")
        if self.reduction_db < 0.0 or self.softness_db <= 0.0:
            raise ValueError("reduction_db must be >= 0 and softness_db > 0")
        if self.smooth_time_frames < 0 or self.smooth_freq_bins < 0:
            raise ValueError("smoothing widths must be >= 0")
        if self.floor_smoothing_octaves <= 0.0 or self.max_profile_frames < 1 or self.hum_max_hz < 0.0:
            raise ValueError("floor_smoothing_octaves and max_profile_frames must be > 0, hum_max_hz >= 0")


def denoise(
    samples: np.ndarray, sample_rate: int, settings: DenoiseSettings = DenoiseSettings()
) -> np.ndarray:
    """Return `samples` (1-D or (channels, frames)) with stationary noise gated; float32, same shape."""
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"samples must be 1-D or (channels, frames), got shape {audio.shape}")
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    if audio.ndim == 1:
        return _denoise_channel(audio, sample_rate, settings)
    out = np.empty_like(audio)
    for channel in range(audio.shape[0]):
        out[channel] = _denoise_channel(audio[channel], sample_rate, settings)
    return out


def _denoise_channel(x: np.ndarray, sample_rate: int, settings: DenoiseSettings) -> np.ndarray:
    """Gate one channel against its own noise profile."""
    if x.shape[0] < settings.n_fft:
        return x.copy()
    window = get_window("hann", settings.n_fft).astype(np.float32)
    padded, pad_left = _pad(x, settings)
    frames = sliding_window_view(padded, settings.n_fft)[:: settings.hop]
    raw_floor = _percentile_floor(frames, window, settings)
    if raw_floor is None:
        return x.copy()
    hum = _hum_bins(x, sample_rate, settings) if settings.remove_hum else np.zeros(raw_floor.shape, bool)
    threshold = _threshold_db(raw_floor, hum, settings)
    accumulated = np.zeros(padded.shape[0], dtype=np.float32)
    for first in range(0, frames.shape[0], _CHUNK_FRAMES):
        count = min(_CHUNK_FRAMES, frames.shape[0] - first)
        gated = _gate_chunk(frames, first, count, window, threshold, settings)
        _overlap_add(accumulated, gated * window, first, settings.hop)
    return _normalise(accumulated[pad_left : pad_left + x.shape[0]], window, settings.hop)


def _pad(x: np.ndarray, settings: DenoiseSettings) -> tuple[np.ndarray, int]:
    """Reflect-pad so every input sample lies under all n_fft // hop frames; returns (padded, left pad)."""
    pad_left = settings.n_fft - settings.hop
    n_frames = (pad_left + x.shape[0] - 1) // settings.hop + 1
    pad_right = (n_frames - 1) * settings.hop + settings.n_fft - pad_left - x.shape[0]
    return np.pad(x, (pad_left, pad_right), mode="reflect"), pad_left


def _spectrum(frames: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Windowed real FFT of a (frames, n_fft) block, complex64."""
    spectrum: np.ndarray = sp_fft.rfft(frames * window, axis=-1, workers=-1)
    return spectrum


def _level_db(spectrum: np.ndarray) -> np.ndarray:
    """Power of each bin in dB (float32), finite on silence."""
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    level: np.ndarray = 10.0 * np.log10(power + np.float32(_EPS_POWER))
    return level


def _percentile_floor(frames: np.ndarray, window: np.ndarray, settings: DenoiseSettings) -> np.ndarray | None:
    """Per-bin low percentile of the level (dB) over non-silent frames; None when every frame is silent."""
    stride = max(1, math.ceil(frames.shape[0] / settings.max_profile_frames))
    sample = frames[::stride]
    active = np.mean(np.square(sample, dtype=np.float64), axis=1) > _SILENT_FRAME_POWER
    if not np.any(active):
        return None
    levels = _level_db(_spectrum(sample[active], window))
    floor: np.ndarray = np.percentile(levels, settings.noise_percentile, axis=0).astype(np.float64)
    return floor


def _broadband_floor(raw_floor: np.ndarray, octaves: float) -> np.ndarray:
    """Running median over a window of `octaves` (at least ±24 bins): the floor without narrow peaks."""
    ratio = 2.0 ** (octaves / 2.0) - 1.0
    smooth = np.empty_like(raw_floor)
    for index in range(raw_floor.shape[0]):
        half = max(_MIN_FLOOR_HALF_WIDTH, int(round(index * ratio)))
        smooth[index] = np.median(raw_floor[max(0, index - half) : index + half + 1])
    return smooth


def _rayleigh_offset_db(percentile: float) -> float:
    """dB from the given percentile of a Rayleigh-distributed bin's power up to its mean power."""
    return -10.0 * math.log10(-math.log1p(-percentile / 100.0))


def _threshold_db(raw_floor: np.ndarray, hum: np.ndarray, settings: DenoiseSettings) -> np.ndarray:
    """Gate threshold per bin: estimated mean noise power plus the margin.

    Narrow stationary peaks (sustained tones) are clipped to the broadband floor plus a tolerance so they
    are kept as music; in bins marked as mains hum the peak itself is the noise and is not clipped.
    Random noise is corrected from its percentile to its mean (Rayleigh); a dominant hum line is
    near-deterministic, so its percentile already is its power.
    """
    ceiling = _broadband_floor(raw_floor, settings.floor_smoothing_octaves) + settings.peak_tolerance_db
    noise = np.minimum(raw_floor, ceiling) + _rayleigh_offset_db(settings.noise_percentile)
    noise = np.where(hum, np.maximum(raw_floor, noise), noise)
    threshold: np.ndarray = (noise + settings.threshold_db).astype(np.float32)
    return threshold


def _gate_chunk(
    frames: np.ndarray,
    first: int,
    count: int,
    window: np.ndarray,
    threshold: np.ndarray,
    settings: DenoiseSettings,
) -> np.ndarray:
    """Gated time frames [first, first + count), computed with enough context for both smoothings.

    The open/closed decision is taken on locally averaged power, so lone noise peaks rarely open the
    gate (musical noise) while the averaging widens real components by as much as the later smoothing
    of the mask narrows them.
    """
    margin = 2 * settings.smooth_time_frames
    start = max(0, first - margin)
    stop = min(frames.shape[0], first + count + margin)
    spectrum = _spectrum(frames[start:stop], window)
    power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
    level = 10.0 * np.log10(_smooth(power, settings) + np.float32(_EPS_POWER))
    level -= threshold
    level *= np.float32(1.0 / settings.softness_db)
    gate = _smooth(expit(level), settings)[first - start : first - start + count]
    spectrum = spectrum[first - start : first - start + count]
    spectrum *= _gain(gate, settings.reduction_db)
    frames_out: np.ndarray = sp_fft.irfft(spectrum, n=settings.n_fft, axis=-1, workers=-1)
    return frames_out


def _triangle(half_width: int) -> np.ndarray:
    """Normalised triangular kernel of 2 * half_width + 1 taps."""
    kernel = np.bartlett(2 * half_width + 3)[1:-1].astype(np.float32)
    normalised: np.ndarray = kernel / kernel.sum()
    return normalised


def _smooth(values: np.ndarray, settings: DenoiseSettings) -> np.ndarray:
    """Triangular smoothing of a (frames, bins) array over time (axis 0) and frequency (axis 1)."""
    if settings.smooth_time_frames > 0:
        values = convolve1d(values, _triangle(settings.smooth_time_frames), axis=0, mode="nearest")
    if settings.smooth_freq_bins > 0:
        values = convolve1d(values, _triangle(settings.smooth_freq_bins), axis=1, mode="nearest")
    return values


def _gain(gate: np.ndarray, reduction_db: float) -> np.ndarray:
    """Amplitude gain from the gate, interpolated in dB: 0 dB where open, -reduction_db where closed."""
    gate -= np.float32(1.0)
    gate *= np.float32(reduction_db * math.log(10.0) / 20.0)
    gain: np.ndarray = np.exp(gate, out=gate)
    return gain


def _overlap_add(accumulated: np.ndarray, frames: np.ndarray, first: int, hop: int) -> None:
    """Add (count, n_fft) frames starting at frame `first` into `accumulated`, hop-block by hop-block."""
    count, n_fft = frames.shape
    per_frame = n_fft // hop
    blocks = np.zeros((count + per_frame - 1, hop), dtype=np.float32)
    split = frames.reshape(count, per_frame, hop)
    for offset in range(per_frame):
        blocks[offset : offset + count] += split[:, offset]
    begin = first * hop
    accumulated[begin : begin + blocks.size] += blocks.ravel()


def _normalise(segment: np.ndarray, window: np.ndarray, hop: int) -> np.ndarray:
    """Divide the overlap-added signal by the summed squared window (periodic in hop); returns a copy."""
    squared = (window.astype(np.float64) ** 2).reshape(-1, hop).sum(axis=0).astype(np.float32)
    out = segment.copy()
    whole = (out.shape[0] // hop) * hop
    out[:whole].reshape(-1, hop)[:] /= squared
    out[whole:] /= squared[: out.shape[0] - whole]
    return out


def _hum_bins(x: np.ndarray, sample_rate: int, settings: DenoiseSettings) -> np.ndarray:
    """STFT bins around stationary mains-hum harmonics (50 or 60 Hz combs); all False when none is found."""
    length, starts = hum_segment_starts(x.shape[0], sample_rate)
    segments = sliding_window_view(x, length)[starts] if starts.size else np.zeros((0, length), np.float32)
    return hum_bins_of(segments, sample_rate, settings)


def hum_segment_starts(frames: int, sample_rate: int) -> tuple[int, np.ndarray]:
    """The length of the long segments hum is detected on, and where they start in `frames` samples
    (none when the signal is shorter than one)."""
    length = 2 ** max(8, int(round(math.log2(sample_rate * _HUM_SEGMENT_SECONDS))))
    if frames < length:
        return length, np.zeros(0, np.int64)
    count = min(_HUM_MAX_SEGMENTS, 1 + (frames - length) // (length // 4))
    return length, np.linspace(0, frames - length, count).astype(np.int64)


def hum_bins_of(segments: np.ndarray, sample_rate: int, settings: DenoiseSettings) -> np.ndarray:
    """`_hum_bins` from the (count, length) segments at `hum_segment_starts`."""
    n_bins = settings.n_fft // 2 + 1
    marked = np.zeros(n_bins, dtype=bool)
    spectrum_db, bin_hz = _stationary_fine_spectrum(segments, sample_rate, settings.noise_percentile)
    if spectrum_db is None:
        return marked
    stft_bin_hz = sample_rate / settings.n_fft
    for mains in _MAINS_HZ:
        lines = _hum_lines(spectrum_db, bin_hz, mains, sample_rate, settings)
        for frequency in lines:
            centre = int(round(frequency / stft_bin_hz))
            marked[max(0, centre - _HUM_MARK_HALF_BINS) : centre + _HUM_MARK_HALF_BINS + 1] = True
    return marked


def _stationary_fine_spectrum(
    segments: np.ndarray, sample_rate: int, percentile: float
) -> tuple[np.ndarray | None, float]:
    """Low-percentile power spectrum (dB) of long Blackman-Harris segments; (None, 0) if none or all silent."""
    length = segments.shape[1]
    if segments.shape[0] == 0:
        return None, 0.0
    active = np.mean(np.square(segments, dtype=np.float64), axis=1) > _SILENT_FRAME_POWER
    if not np.any(active):
        return None, 0.0
    window = get_window("blackmanharris", length).astype(np.float32)
    levels = _level_db(_spectrum(segments[active], window))
    return np.percentile(levels, percentile, axis=0), sample_rate / length


def _hum_lines(
    spectrum_db: np.ndarray, bin_hz: float, mains: float, sample_rate: int, settings: DenoiseSettings
) -> list[float]:
    """Frequencies of the harmonics of `mains` that stand out as stationary peaks, if the comb is present."""
    harmonics = range(1, int(min(settings.hum_max_hz, sample_rate / 2.0 - _HUM_FLOOR_HALF_HZ) // mains) + 1)
    found = {k: _peak_frequency(spectrum_db, bin_hz, k * mains, settings.hum_detect_db) for k in harmonics}
    hits = sum(1 for k in range(1, _HUM_FAMILY_HARMONICS + 1) if found.get(k) is not None)
    if hits < _HUM_FAMILY_MIN_HITS:
        return []
    return [frequency for frequency in found.values() if frequency is not None]


def _peak_frequency(
    spectrum_db: np.ndarray, bin_hz: float, target_hz: float, min_excess_db: float
) -> float | None:
    """Frequency of a local spectral maximum near target_hz standing min_excess_db above its surroundings."""
    tolerance = max(1.5 * bin_hz, 0.005 * target_hz)
    low = int(math.floor((target_hz - tolerance) / bin_hz))
    high = int(math.ceil((target_hz + tolerance) / bin_hz))
    if low < 1 or high + 1 >= spectrum_db.shape[0]:
        return None
    peak = low + int(np.argmax(spectrum_db[low : high + 1]))
    if peak in (low, high):  # a slope (another component's skirt), not a line at the target
        return None
    reach = max(int(round(_HUM_FLOOR_HALF_HZ / bin_hz)), 2 * _HUM_LINE_HALF_BINS)
    below = spectrum_db[max(0, peak - reach) : max(0, peak - _HUM_LINE_HALF_BINS)]
    above = spectrum_db[peak + _HUM_LINE_HALF_BINS + 1 : peak + reach + 1]
    neighbours = np.concatenate([below, above])
    if neighbours.size == 0 or spectrum_db[peak] - np.median(neighbours) < min_excess_db:
        return None
    return peak * bin_hz
