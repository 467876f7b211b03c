"""What every family's network carries beside its weights: its stems, rate and inference settings,
and the model calls of MSST's inference over a whole mix (which the engine runs instead of Demucs's)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..engine.inference import Precision, Steps
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
        network = self.fast_form() if precision is Precision.FAST and _bf16_cpu(mix.device) else self
        return demix_steps(network, mix, self.config.inference, precision, len(self.sources),
                           self.output_slice(self.outputs()))

    def fast_form(self) -> nn.Module:
        """A copy whose linear layers hold bf16 weights, made once: under bf16 autocast the weights
        are then read as they are instead of cast on every call (on the RoFormers, most of a call's
        memory traffic). Kept outside the module tree, so the state dict stays the checkpoint's."""
        fast = self.__dict__.get("_fast_form")
        if fast is None:
            fast = copy.deepcopy(self)
            for module in fast.modules():
                if type(module) is nn.Linear:
                    module.to(torch.bfloat16)
            self.__dict__["_fast_form"] = fast
        return fast  # type: ignore[no-any-return]

    def count_calls(self, length: int) -> int:
        return count_calls(length, self.config.inference)


def _bf16_cpu(device: torch.device) -> bool:
    """Where `fast` runs under bf16 autocast on CPU (engine.autocast): only there are bf16 weights right."""
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
