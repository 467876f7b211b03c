"""Blocks at another rate, through soxr's streaming resampler, exactly as long and the same to the
bit as the one-shot `resample` makes them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import soxr

from ..audio.convert import output_frames
from .blocks import BlockSource

QUALITY = "HQ"  # as audio.convert.resample


class Resampler:
    """A signal of `frames` input frames pushed block by block; what comes out is cut or zero-padded
    at the end to `output_frames(frames, ...)`, the one-shot conversion's length."""

    def __init__(self, rate_in: int, rate_out: int, channels: int, frames: int) -> None:
        self.channels = channels
        self.left = output_frames(frames, rate_in, rate_out)  # output frames still to hand on
        self.stream = None if rate_in == rate_out else soxr.ResampleStream(
            rate_in, rate_out, channels, dtype="float32", quality=QUALITY)

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The output frames that `block` (channels, n) completes; with `last`, all the rest."""
        if self.stream is None:
            out = block
        else:
            converted = self.stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32), last=last)
            out = np.ascontiguousarray(converted.reshape(-1, self.channels).T)
        out = out[:, :self.left]
        self.left -= out.shape[-1]
        if last and self.left:  # fewer frames than the exact length: zeros, as fit_length pads
            out = np.concatenate([out, np.zeros((self.channels, self.left), np.float32)], axis=1)
            self.left = 0
        return out


class ResampledBlocks:
    """`source` at `rate`, soxr "HQ" run block by block."""

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
        resampler = Resampler(self.source.rate, self.rate, self.channels, self.source.frames)
        for block in self.source.blocks():
            if (out := resampler.push(block)).shape[-1]:
                yield out
        if (tail := resampler.push(np.zeros((self.channels, 0), np.float32), last=True)).shape[-1]:
            yield tail
