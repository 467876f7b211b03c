"""What both RoFormers share: the STFT of the mix, the fields of their configs, the masked inverse STFT."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import FamilyModel
from .config import ConfigError, ModelConfig, model_fields
from .roformer_blocks import MaskEstimator, axial_layers, run_axial

# MSST's constructor defaults of both RoFormers (the Mel-Band one overrides a few, and adds its own).
ROFORMER_DEFAULTS: dict[str, Any] = {
    "dim": None, "depth": None, "stereo": False, "num_stems": 1, "time_transformer_depth": 2,
    "freq_transformer_depth": 2, "linear_transformer_depth": 0, "dim_head": 64, "heads": 8,
    "stft_n_fft": 2048, "stft_hop_length": 512, "stft_win_length": 2048, "stft_normalized": False,
    "zero_dc": True, "mask_estimator_depth": 2, "mlp_expansion_factor": 4, "skip_connection": False,
}
# Fields that change training or the attention kernel, not what inference computes.
ROFORMER_IGNORED = frozenset({
    "attn_dropout", "ff_dropout", "flash_attn", "dim_freqs_in", "multi_stft_resolution_loss_weight",
    "multi_stft_resolutions_window_sizes", "multi_stft_hop_size", "multi_stft_normalized",
    "use_torch_checkpoint", "sage_attention",
})
ROFORMER_REFUSED = {"use_pope": False}  # PoPE positions are not implemented: refused unless off


def roformer_fields(config: ModelConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """The model section checked against the defaults; stereo and a head count that fits the stems."""
    fields = model_fields(config, defaults, ROFORMER_IGNORED, ROFORMER_REFUSED)
    for key in ("dim", "depth"):
        if isinstance(fields[key], bool) or not isinstance(fields[key], int) or fields[key] < 1:
            raise ConfigError(f"model.{key} must be a positive integer, not {fields[key]!r}")
    if fields["stereo"] is not True:
        raise ConfigError("model.stereo must be true: only stereo models are served")
    stems, instruments = fields["num_stems"], len(config.instruments)
    if not (stems == instruments or (config.target is not None and stems == 1)):
        raise ConfigError(f"model.num_stems is {stems!r} but training.instruments has {instruments} "
                          "(with training.target_instrument, 1 is also accepted)")
    if fields["stft_win_length"] > fields["stft_n_fft"]:
        raise ConfigError("model.stft_win_length must not exceed model.stft_n_fft")
    return fields


class RoFormer(FamilyModel):
    """Band features of the mix's STFT through axial transformers, to complex masks per stem."""

    def __init__(self, config: ModelConfig, fields: dict[str, Any], final_norm: bool) -> None:
        super().__init__(config)
        self.fields = fields
        self.n_fft, self.hop = fields["stft_n_fft"], fields["stft_hop_length"]
        self.win_length, self.normalized = fields["stft_win_length"], fields["stft_normalized"]
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.layers = axial_layers(fields["dim"], fields["depth"], fields["heads"], fields["dim_head"],
                                   fields["time_transformer_depth"], fields["freq_transformer_depth"],
                                   fields["linear_transformer_depth"], norm_output=not final_norm)
        # Where training.target_instrument picks one of several heads, only that head runs.
        self.heads = [config.instruments.index(config.target)] \
            if config.target is not None and fields["num_stems"] > 1 else list(range(fields["num_stems"]))

    def outputs(self) -> int:
        return len(self.heads)

    def add_heads(self, widths: list[int], linears: int) -> None:
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(self.fields["dim"], widths, linears, self.fields["mlp_expansion_factor"])
            for _ in range(self.fields["num_stems"]))

    def spectrogram(self, audio: Tensor) -> Tensor:
        """(batch, channels, time) -> complex (batch, bins x channels interleaved, frames)."""
        batch, channels, length = audio.shape
        spec = torch.stft(audio.reshape(-1, length), self.n_fft, self.hop, self.win_length, self.window,
                          normalized=self.normalized, return_complex=True)
        return spec.unflatten(0, (batch, channels)).transpose(1, 2).flatten(1, 2)

    def features(self, spec: Tensor) -> Tensor:
        """complex (batch, bins, frames) -> real (batch, frames, bins x 2) and the network's masks
        (batch, heads, frames, bins x 2)."""
        x = torch.view_as_real(spec).transpose(1, 2).flatten(2)
        x = run_axial(self.layers, self.band_split(x), self.fields["skip_connection"])
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
        return torch.stack([self.mask_estimators[head](x) for head in self.heads], dim=1)

    def masks(self, raw: Tensor) -> Tensor:
        """(batch, heads, frames, bins x 2) -> complex (batch, heads, bins, frames)."""
        return torch.view_as_complex(raw.float().unflatten(-1, (-1, 2)).transpose(2, 3).contiguous())

    def waveform(self, spec: Tensor, channels: int, length: int | None) -> Tensor:
        """complex (batch, heads, bins x channels, frames) -> (batch, heads, channels, time)."""
        batch, heads, _, frames = spec.shape
        spec = spec.unflatten(2, (-1, channels)).transpose(2, 3).reshape(batch * heads * channels, -1, frames)
        if self.fields["zero_dc"]:
            spec[:, 0] = 0.0
        audio = torch.istft(spec, self.n_fft, self.hop, self.win_length, self.window,
                            normalized=self.normalized, length=length)
        return audio.reshape(batch, heads, channels, -1)
