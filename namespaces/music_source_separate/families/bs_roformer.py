"""BS-RoFormer (Lu et al. 2023): the STFT split into fixed bands of bins, as MSST builds it."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .config import ConfigError, ModelConfig
from .roformer import ROFORMER_DEFAULTS, RoFormer, roformer_fields
from .roformer_blocks import BandSplit, RMSNorm

# MSST's default bands (62 bands over 1025 bins: n_fft 2048).
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
DEFAULTS: dict[str, Any] = {**ROFORMER_DEFAULTS, "freqs_per_bands": DEFAULT_FREQS_PER_BANDS}


class BSRoformer(RoFormer):
    def __init__(self, config: ModelConfig) -> None:
        fields = roformer_fields(config, DEFAULTS)
        super().__init__(config, fields, final_norm=True)
        bands = fields["freqs_per_bands"]
        bins = fields["stft_n_fft"] // 2 + 1
        if not isinstance(bands, list | tuple) or len(bands) < 2 \
                or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in bands):
            raise ConfigError("model.freqs_per_bands must be a list of at least two positive bin counts")
        if sum(bands) != bins:
            raise ConfigError(f"model.freqs_per_bands adds up to {sum(bands)} bins, but the STFT "
                              f"(model.stft_n_fft {fields['stft_n_fft']}) has {bins}")
        widths = [2 * 2 * count for count in bands]  # real and imaginary parts of both channels
        self.band_split = BandSplit(fields["dim"], widths)
        self.final_norm = RMSNorm(fields["dim"])
        self.add_heads(widths, fields["mask_estimator_depth"])

    def forward(self, audio: Tensor) -> Tensor:
        spec = self.spectrogram(audio)
        masked = spec[:, None] * self.masks(self.features(spec))
        return self.waveform(masked, audio.shape[1], audio.shape[-1])
