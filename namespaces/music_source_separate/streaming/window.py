"""The stretch of the normalised mix that the segments still to run will read."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


class MixWindow:
    """Frames [start, end) of a mix of `total` frames, held as one (1, channels, n) tensor; reads
    outside [0, total) are zeros, as the whole-song computation pads its mix."""

    def __init__(self, channels: int, total: int, device: torch.device) -> None:
        self.total = total
        self.start = self.end = 0
        self.samples = torch.zeros(1, channels, 0, device=device)

    def append(self, block: Tensor) -> None:
        """Add the next (channels, n) frames."""
        if self.end + block.shape[-1] > self.total:
            raise ValueError(f"the mix has more frames than the {self.total} announced")
        self.samples = torch.cat([self.samples, block[None].to(self.samples.device)], dim=-1)
        self.end += block.shape[-1]

    def holds(self, stop: int) -> bool:
        """Whether every frame of the mix before `stop` is here."""
        return min(stop, self.total) <= self.end

    def read(self, start: int, stop: int) -> Tensor:
        """Frames [start, stop) of the zero-extended mix, (1, channels, stop - start)."""
        low, high = max(start, 0), min(stop, self.total)
        if low >= high:
            return self.samples.new_zeros(*self.samples.shape[:2], stop - start)
        if low < self.start or high > self.end:
            raise ValueError(f"frames [{low}, {high}) are not in the window [{self.start}, {self.end})")
        return F.pad(self.samples[..., low - self.start:high - self.start], (low - start, stop - high))

    def drop_before(self, frame: int) -> None:
        """Let go of the frames before `frame`; the tensor is copied at the next `append`."""
        cut = min(max(0, frame - self.start), self.end - self.start)
        if cut > 0:
            self.samples = self.samples[..., cut:]
            self.start += cut
