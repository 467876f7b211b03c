"""The mix's statistics that Demucs normalises by, taken in one pass over its blocks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..engine.inference import NORM_EPSILON


@dataclass(frozen=True)
class MixStatistics:
    """Mean and standard deviation of the mix's mono reference (`mix.mean(0)`), over all its frames."""

    frames: int
    mean: float
    std: float  # unbiased, as torch's `std()`; 0 for a single frame

    def scale(self) -> tuple[Tensor, Tensor]:
        """(mean, std + epsilon) as the float32 scalars `engine.separation_steps` divides by."""
        return torch.tensor(self.mean, dtype=torch.float32), torch.tensor(self.std, dtype=torch.float32) + NORM_EPSILON


class RunningStatistics:
    """Count, mean and sum of squared deviations, merged block by block (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, block: np.ndarray) -> None:
        """Take in a (channels, frames) float32 block."""
        if block.shape[-1] == 0:
            return
        # The reference in float32, the sum of the channels over their count as torch's `mix.mean(0)`;
        # everything after in float64.
        reference = block.mean(axis=0, dtype=np.float32).astype(np.float64)
        count = reference.shape[0]
        mean = float(reference.mean())
        m2 = float(np.square(reference - mean).sum())
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def result(self) -> MixStatistics:
        if self.count == 0:
            raise ValueError("no frames")
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0
        return MixStatistics(self.count, self.mean, std)


def measure(blocks: Iterable[np.ndarray]) -> MixStatistics:
    """The statistics of every block's frames together."""
    running = RunningStatistics()
    for block in blocks:
        running.add(block)
    return running.result()
