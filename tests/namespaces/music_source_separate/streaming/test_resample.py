"""soxr's streaming resampler, block by block, against the one-shot `resample`."""

from __future__ import annotations

import numpy as np
import pytest

from namespaces.music_source_separate.audio.convert import resample
from namespaces.music_source_separate.streaming import ArrayBlocks, ResampledBlocks


@pytest.mark.parametrize(("rate_in", "rate_out", "frames", "block_frames"), [
    (48000, 44100, 48000 * 7 + 13, 1 << 16),
    (22050, 44100, 22050 * 5 + 1, 1000),
    (44100, 48000, 44100 * 3, 4096),
    (8000, 44100, 8001, 333),
    (96000, 44100, 17, 5),
])
def test_streamed_resampling_equals_the_one_shot(rate_in: int, rate_out: int, frames: int, block_frames: int) -> None:
    samples = (np.random.default_rng(frames).standard_normal((2, frames)) * 0.1).astype(np.float32)
    expected = resample(samples, rate_in, rate_out)
    source = ResampledBlocks(ArrayBlocks(samples, rate_in, block_frames), rate_out)
    assert source.frames == expected.shape[-1]
    blocks = list(source.blocks())
    assert all(block.dtype == np.float32 and block.shape[0] == 2 for block in blocks)
    assert np.array_equal(np.concatenate(blocks, axis=1), expected)  # the same to the bit


def test_equal_rates_pass_blocks_through() -> None:
    samples = np.ones((1, 1000), np.float32)
    source = ResampledBlocks(ArrayBlocks(samples, 44100, 300), 44100)
    assert [b.shape[-1] for b in source.blocks()] == [300, 300, 300, 100]
