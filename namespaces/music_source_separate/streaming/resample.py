"""Another source's blocks at another rate, through soxr's streaming resampler, exactly as long as the
one-shot `resample` makes them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr

from ..audio.convert import output_frames
from .blocks import BlockSource

QUALITY = "HQ"  # as audio.convert.resample


class ResampledBlocks:
    """`source` at `rate`: soxr "HQ" run block by block, cut or zero-padded at the end to
    `output_frames(source.frames, ...)`, the one-shot conversion's length."""

    def __init__(self, source: BlockSource, rate: int) -> None:
        self.source = source
        self.rate = rate

    @property
    def channels(self) -> int:
        return self.source.channels

    @property
    def frames(self) -> int:
        return output_frames(self.source.frames, self.source.rate, self.rate)

    def blocks(self) -> Iterator[np.ndarray]:
        if self.source.rate == self.rate:
            yield from self.source.blocks()
            return
        stream = soxr.ResampleStream(self.source.rate, self.rate, self.channels, dtype="float32", quality=QUALITY)
        left = self.frames
        for block in self.source.blocks():
            out = stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
            if out.shape[0] and left:
                yield np.ascontiguousarray(out.reshape(out.shape[0], -1)[:left].T)
                left -= min(left, out.shape[0])
        out = stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        tail = np.ascontiguousarray(out.reshape(out.shape[0], -1)[:left].T)
        left -= tail.shape[-1]
        if tail.shape[-1]:
            yield tail
        if left:  # soxr gave fewer frames than the exact length: zeros, as fit_length pads
            yield np.zeros((self.channels, left), np.float32)
