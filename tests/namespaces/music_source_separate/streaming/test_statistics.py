"""The mix's statistics from one pass over its blocks, read once from a spool on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from namespaces.music_source_separate.streaming import ArrayBlocks, MixStatistics, Spool, measure


def mix(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, frames)) * np.linspace(0.01, 0.5, frames) + 0.03).astype(np.float32)


@pytest.mark.parametrize(("frames", "block_frames"), [(5000, 1), (300_001, 4097), (300_001, 1 << 20)])
def test_statistics_equal_torch_on_the_whole_mix(frames: int, block_frames: int) -> None:
    samples = mix(frames)
    stats = measure(ArrayBlocks(samples, 44100, block_frames).blocks())
    reference = torch.from_numpy(samples).mean(0)  # torch's float32 reference
    exact = reference.double()
    assert stats.frames == frames
    assert stats.mean == pytest.approx(exact.mean().item(), rel=1e-12)
    assert stats.std == pytest.approx(exact.std().item(), rel=1e-12)
    # torch's own float32 results are a few roundings away from the exact values
    mean, std = stats.scale()
    assert mean.item() == pytest.approx(reference.mean().item(), rel=1e-6)
    assert std.item() == pytest.approx(reference.std().item() + 1e-8, rel=1e-6)


def test_one_frame_and_silence() -> None:
    assert measure([np.zeros((2, 1), np.float32)]) == MixStatistics(1, 0.0, 0.0)
    assert measure([np.zeros((2, 100), np.float32)]).scale()[1].item() == pytest.approx(1e-8)
    with pytest.raises(ValueError):
        measure([])


def test_the_spool_reads_back_what_it_was_given(tmp_path: Path) -> None:
    samples = mix(100_003, seed=1)
    with Spool(ArrayBlocks(samples, 44100, 7000), tmp_path, block_frames=30000) as spool:
        assert (spool.rate, spool.channels, spool.frames) == (44100, 2, 100_003)
        assert spool.statistics == measure(ArrayBlocks(samples, 44100, 7000).blocks())
        first, second = spool.blocks(), spool.blocks()  # two readers at once
        assert np.array_equal(next(first), samples[:, :30000])
        assert np.array_equal(np.concatenate(list(second), axis=1), samples)
        assert np.array_equal(np.concatenate([samples[:, :30000], *first], axis=1), samples)
    assert list(tmp_path.iterdir()) == []  # an unnamed file: nothing left behind
