"""MDX23C (TFC-TDF v3, Kim et al. 2023): a U-Net of time-frequency convolutions and frequency
dense layers over the complex STFT split into subbands, as MSST builds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .base import FamilyModel
from .config import ConfigError, ModelConfig

MODEL_FIELDS = ("num_subbands", "num_scales", "scale", "num_blocks_per_scale", "num_channels", "growth",
                "bottleneck_factor", "norm", "act")
Norm = Callable[[int], nn.Module]


def norm_layer(name: str) -> Norm:
    """`model.norm`: BatchNorm, InstanceNorm, GroupNorm<groups>, anything else none (as MSST)."""
    if name == "BatchNorm":
        return nn.BatchNorm2d
    if name == "InstanceNorm":
        return lambda channels: nn.InstanceNorm2d(channels, affine=True)
    if "GroupNorm" in name:
        groups = int(name.replace("GroupNorm", ""))
        return lambda channels: nn.GroupNorm(groups, channels)
    return lambda channels: nn.Identity()


def activation(name: str) -> nn.Module:
    """`model.act`: gelu, relu or elu<alpha>."""
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    if name.startswith("elu"):
        return nn.ELU(float(name[3:]))
    raise ConfigError(f"model.act {name!r} is not one of gelu, relu, elu<alpha>")


class TfcTdf(nn.Module):
    """`layers` blocks: 3x3 convolution, a bottlenecked dense layer across frequency (residual),
    3x3 convolution, plus a 1x1 shortcut."""

    def __init__(self, channels_in: int, channels: int, layers: int, bins: int, bottleneck: int,
                 norm: Norm, act: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.tfc1 = nn.Sequential(norm(channels_in), act, nn.Conv2d(channels_in, channels, 3, 1, 1, bias=False))
            block.tdf = nn.Sequential(norm(channels), act, nn.Linear(bins, bins // bottleneck, bias=False),
                                      norm(channels), act, nn.Linear(bins // bottleneck, bins, bias=False))
            block.tfc2 = nn.Sequential(norm(channels), act, nn.Conv2d(channels, channels, 3, 1, 1, bias=False))
            block.shortcut = nn.Conv2d(channels_in, channels, 1, 1, 0, bias=False)
            self.blocks.append(block)
            channels_in = channels

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            shortcut = block.shortcut(x)
            x = block.tfc1(x)
            x = x + block.tdf(x)
            x = block.tfc2(x) + shortcut
        return x


class Rescale(nn.Module):
    """Norm, activation, and a strided (transposed) convolution that changes the resolution by `scale`."""

    def __init__(self, conv: type[nn.Conv2d] | type[nn.ConvTranspose2d], channels_in: int, channels: int,
                 scale: tuple[int, int], norm: Norm, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Sequential(norm(channels_in), act,
                                  conv(channels_in, channels, kernel_size=scale, stride=scale, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # type: ignore[no-any-return]


def _fields(config: ModelConfig) -> dict[str, Any]:
    model, audio = config.model, config.audio
    unknown = sorted(set(model) - set(MODEL_FIELDS))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not a field of mdx23c")
    for key in MODEL_FIELDS:
        if key not in model:
            raise ConfigError(f"model.{key} is missing")
    for key in ("n_fft", "hop_length", "dim_f"):
        if isinstance(audio.get(key), bool) or not isinstance(audio.get(key), int) or audio[key] < 1:
            raise ConfigError(f"audio.{key} must be a positive integer, not {audio.get(key)!r}")
    scale = model["scale"]
    if not isinstance(scale, list | tuple) or len(scale) != 2 or not all(isinstance(s, int) and s > 0 for s in scale):
        raise ConfigError(f"model.scale must be two positive integers, not {scale!r}")
    if audio["dim_f"] > audio["n_fft"] // 2 + 1:
        raise ConfigError(f"audio.dim_f {audio['dim_f']} exceeds the STFT's {audio['n_fft'] // 2 + 1} bins")
    bins = audio["dim_f"] // model["num_subbands"]
    if audio["dim_f"] % model["num_subbands"] or bins % (scale[1] ** model["num_scales"]):
        raise ConfigError(f"audio.dim_f {audio['dim_f']} must split into model.num_subbands "
                          f"{model['num_subbands']} bands divisible by model.scale[1] ** model.num_scales")
    return {**model, "scale": tuple(scale), "n_fft": audio["n_fft"], "hop_length": audio["hop_length"],
            "dim_f": audio["dim_f"]}


class MDX23C(FamilyModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        fields = _fields(config)
        norm, act = norm_layer(str(fields["norm"])), activation(str(fields["act"]))
        self.n_fft, self.hop, self.dim_f = fields["n_fft"], fields["hop_length"], fields["dim_f"]
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.subbands = fields["num_subbands"]
        self.targets = len(config.sources)
        scale, layers, growth = fields["scale"], fields["num_blocks_per_scale"], fields["growth"]
        bottleneck, channels = fields["bottleneck_factor"], fields["num_channels"]
        inputs = self.subbands * 2 * 2  # subbands x channels x (real, imaginary)
        bins = self.dim_f // self.subbands
        self.first_conv = nn.Conv2d(inputs, channels, 1, 1, 0, bias=False)
        self.encoder_blocks = nn.ModuleList()
        for _ in range(fields["num_scales"]):
            block = nn.Module()
            block.tfc_tdf = TfcTdf(channels, channels, layers, bins, bottleneck, norm, act)
            block.downscale = Rescale(nn.Conv2d, channels, channels + growth, scale, norm, act)
            self.encoder_blocks.append(block)
            bins, channels = bins // scale[1], channels + growth
        self.bottleneck_block = TfcTdf(channels, channels, layers, bins, bottleneck, norm, act)
        self.decoder_blocks = nn.ModuleList()
        for _ in range(fields["num_scales"]):
            block = nn.Module()
            block.upscale = Rescale(nn.ConvTranspose2d, channels, channels - growth, scale, norm, act)
            bins, channels = bins * scale[1], channels - growth
            block.tfc_tdf = TfcTdf(2 * channels, channels, layers, bins, bottleneck, norm, act)
            self.decoder_blocks.append(block)
        self.final_conv = nn.Sequential(nn.Conv2d(channels + inputs, channels, 1, 1, 0, bias=False), act,
                                        nn.Conv2d(channels, self.targets * inputs, 1, 1, 0, bias=False))

    def outputs(self) -> int:
        return self.targets

    def spectrogram(self, audio: Tensor) -> Tensor:
        """(batch, 2, time) -> (batch, 4 x subbands, bins / subbands, frames): each channel's real and
        imaginary parts, the first `dim_f` bins cut into subbands."""
        batch, channels, length = audio.shape
        spec = torch.stft(audio.reshape(-1, length), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(batch, channels * 2, -1, spec.shape[-1])
        spec = spec[..., :self.dim_f, :]
        return spec.reshape(batch, channels * 2 * self.subbands, self.dim_f // self.subbands, -1)

    def waveform(self, x: Tensor) -> Tensor:
        """(batch, targets x 4 x subbands, bins / subbands, frames) -> (batch, targets, 2, time)."""
        batch, _, _, frames = x.shape
        x = x.reshape(batch, self.targets, 4, self.dim_f, frames)
        padding = x.new_zeros(batch, self.targets, 4, self.n_fft // 2 + 1 - self.dim_f, frames)
        x = torch.cat([x, padding], dim=3).reshape(-1, 2, self.n_fft // 2 + 1, frames)
        spec = torch.complex(x[:, 0], x[:, 1])
        audio = torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True)
        return audio.reshape(batch, self.targets, 2, -1)

    def forward(self, audio: Tensor) -> Tensor:
        mix = self.spectrogram(audio)
        first = self.first_conv(mix)
        x = first.transpose(-1, -2)
        skips = []
        for block in self.encoder_blocks:
            x = block.tfc_tdf(x)
            skips.append(x)
            x = block.downscale(x)
        x = self.bottleneck_block(x)
        for block in self.decoder_blocks:
            x = block.tfc_tdf(torch.cat([block.upscale(x), skips.pop()], dim=1))
        x = x.transpose(-1, -2) * first
        return self.waveform(self.final_conv(torch.cat([mix, x], dim=1)).float())
