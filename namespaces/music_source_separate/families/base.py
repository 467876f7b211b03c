"""What every family's network carries beside its weights: its stems, rate and inference settings,
and the model calls of MSST's inference over a whole mix (which the engine runs instead of Demucs's)."""

from __future__ import annotations

from torch import Tensor, nn

from ..engine import Precision, Steps
from .config import ModelConfig
from .demix import count_calls, demix_steps


class FamilyModel(nn.Module):
    """A network of one of the families; its forward takes (batch, 2, chunk_size) chunks and returns
    (batch, outputs, 2, samples)."""

    audio_channels = 2

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.sources = config.sources
        self.samplerate = config.sample_rate

    def output_slice(self, outputs: int) -> slice | None:
        """Where a network returns every instrument but the config names a target: the target's output."""
        config = self.config
        if config.target is None or outputs != len(config.instruments) or outputs == 1:
            return None
        index = config.instruments.index(config.target)
        return slice(index, index + 1)

    def outputs(self) -> int:
        """How many stems the forward returns."""
        raise NotImplementedError

    def demix_steps(self, mix: Tensor, precision: Precision) -> Steps:
        """The stems (sources, channels, time) of `mix` (channels, time), as MSST's `demix`."""
        outputs = self.outputs()
        return demix_steps(self, mix, self.config.inference, precision, len(self.sources),
                           self.output_slice(outputs))

    def count_calls(self, length: int) -> int:
        return count_calls(length, self.config.inference)
