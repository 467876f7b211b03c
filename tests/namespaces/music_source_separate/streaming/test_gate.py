"""The denoiser over a stem read as blocks equals the one-shot `denoise` to the bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.engine.denoise import DenoiseSettings, denoise
from namespaces.music_source_separate.streaming import ArrayBlocks, DenoisedBlocks, IteratorBlocks, Spool

RATE = 44100
DEFAULTS = DenoiseSettings()


def stem(seconds: float, seed: int = 0, hum: bool = True) -> np.ndarray:
    """A tone in noise, with mains hum on the first channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    channels = []
    for channel in range(2):
        x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)
        if hum and channel == 0:
            x += 0.02 * np.sin(2 * np.pi * 50 * t) + 0.03 * np.sin(2 * np.pi * 100 * t)
        channels.append(x)
    return np.stack(channels).astype(np.float32)


def streamed(samples: np.ndarray, block_frames: int, settings: DenoiseSettings = DEFAULTS) -> np.ndarray:
    blocks = list(DenoisedBlocks(ArrayBlocks(samples, RATE, block_frames), settings).blocks())
    return np.concatenate(blocks, axis=1)


@pytest.mark.parametrize(("seconds", "block_frames"), [(8.0, 1 << 16), (0.3, 7), (0.03, 100)])
def test_equals_the_one_shot_gate(seconds: float, block_frames: int) -> None:
    """Hum on one channel, none on the other; tiny blocks; shorter than n_fft (left as it is)."""
    samples = stem(seconds)
    assert np.array_equal(streamed(samples, block_frames), denoise(samples, RATE))


def test_several_chunks_a_silent_channel_and_a_sampled_profile() -> None:
    """Longer than one gated chunk (2048 frames), with the noise profile sampled every other frame."""
    samples = stem(30.0, seed=1)
    samples[1] = 0.0
    settings = DenoiseSettings(max_profile_frames=1000)
    assert np.array_equal(streamed(samples, 10000, settings), denoise(samples, RATE, settings))


def test_without_hum_removal() -> None:
    samples = stem(5.0, seed=2)
    settings = DenoiseSettings(remove_hum=False)
    assert np.array_equal(streamed(samples, 4096, settings), denoise(samples, RATE, settings))


def test_a_stem_as_it_is_separated_is_spooled_then_gated(tmp_path: Path) -> None:
    samples = stem(6.0, seed=3)
    arriving = IteratorBlocks(iter(np.array_split(samples, 9, axis=1)), RATE, 2, samples.shape[-1])
    with Spool(arriving, tmp_path) as spool:
        gated = np.concatenate(list(DenoisedBlocks(spool).blocks()), axis=1)
    assert np.array_equal(gated, denoise(samples, RATE))
    with pytest.raises(RuntimeError):
        arriving.blocks()
