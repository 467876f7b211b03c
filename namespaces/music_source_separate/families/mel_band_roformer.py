"""Mel-Band RoFormer (Wang et al. 2023): overlapping mel bands of bins; a bin in several bands gets
the mean of their masks. As MSST builds it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .config import ConfigError, ModelConfig
from .mel_bands import band_membership
from .roformer import ROFORMER_DEFAULTS, RoFormer, roformer_fields
from .roformer_blocks import BandSplit

DEFAULTS: dict[str, Any] = {**ROFORMER_DEFAULTS, "num_bands": 60, "mask_estimator_depth": 1,
                            "sample_rate": 44100, "match_input_audio_length": False}


class MelBandRoformer(RoFormer):
    def __init__(self, config: ModelConfig) -> None:
        fields = roformer_fields(config, DEFAULTS)
        super().__init__(config, fields, final_norm=False)
        bands = fields["num_bands"]
        if isinstance(bands, bool) or not isinstance(bands, int) or bands < 2:
            raise ConfigError(f"model.num_bands must be an integer of at least 2, not {bands!r}")
        member = torch.from_numpy(band_membership(fields["sample_rate"], fields["stft_n_fft"], bands))
        if not bool(member.any(dim=0).all()):
            raise ConfigError(f"model.num_bands {bands} leaves STFT bins in no band (model.stft_n_fft too small)")
        bins = member.shape[1]
        indices = torch.arange(bins).expand(bands, bins)[member]  # band by band, bins ascending
        indices = (indices[:, None] * 2 + torch.arange(2)).flatten()  # both channels of each bin
        self.register_buffer("freq_indices", indices, persistent=False)
        self.register_buffer("bands_per_bin", member.sum(dim=0).repeat_interleave(2)[:, None], persistent=False)
        widths = [2 * 2 * int(count) for count in member.sum(dim=1)]
        self.band_split = BandSplit(fields["dim"], widths)
        self.add_heads(widths, fields["mask_estimator_depth"] + 1)

    def forward(self, audio: Tensor) -> Tensor:
        spec = self.spectrogram(audio)
        masks = self.masks(self.features(spec[:, self.freq_indices]))
        batch, heads, _, frames = masks.shape
        index = self.freq_indices[None, None, :, None].expand(batch, heads, -1, frames)
        summed = torch.zeros(batch, heads, spec.shape[1], frames, dtype=spec.dtype, device=spec.device)
        summed.scatter_add_(2, index, masks.to(spec.dtype))
        masked = spec[:, None] * (summed / self.bands_per_bin.clamp(min=1e-8))
        length = audio.shape[-1] if self.fields["match_input_audio_length"] else None
        return self.waveform(masked, audio.shape[1], length)
