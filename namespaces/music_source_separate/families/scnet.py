"""SCNet (Tong et al. 2024, "Sparse Compression Network"), as MSST builds it (`model_type: scnet`):
the complex STFT through sparse down-sampling blocks (low, mid and high bands each with their own
stride), dual-path LSTMs alternating between the time and the time-frequency domain, and sparse
up-sampling back to the STFT."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import FamilyModel
from .config import ConfigError, ModelConfig, model_fields

BANDS = ("low", "mid", "high")
DEFAULTS: dict[str, Any] = {
    "sources": None, "audio_channels": 2, "dims": [4, 32, 64, 128], "nfft": 4096, "hop_size": 1024,
    "win_size": 4096, "normalized": True, "band_SR": [0.175, 0.392, 0.433], "band_stride": [1, 4, 16],
    "band_kernel": [3, 4, 16], "conv_depths": [3, 2, 1], "compress": 4, "conv_kernel": 3, "num_dplayer": 6,
    "expand": 1,
}


class Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x.sigmoid()


class ConvolutionModule(nn.Module):
    """Residual layers of norm, gated convolution, depthwise convolution, norm, swish, 1x1 convolution."""

    def __init__(self, channels: int, depth: int, compress: float, kernel: int) -> None:
        super().__init__()
        hidden = int(channels / compress)
        pad = kernel // 2
        self.layers = nn.ModuleList(nn.Sequential(
            nn.GroupNorm(1, channels), nn.Conv1d(channels, hidden * 2, kernel, padding=pad), nn.GLU(1),
            nn.Conv1d(hidden, hidden, kernel, padding=pad, groups=hidden), nn.GroupNorm(1, hidden), Swish(),
            nn.Conv1d(hidden, channels, 1)) for _ in range(abs(depth)))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class SparseDown(nn.Module):
    """Each band's bins convolved down by its own stride."""

    def __init__(self, channels_in: int, channels: int, bands: list[dict[str, Any]]) -> None:
        super().__init__()
        self.bands = bands
        self.convs = nn.ModuleList(nn.Conv2d(channels_in, channels, (band["kernel"], 1), (band["stride"], 1))
                                   for band in bands)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[int]]:
        bins = x.shape[2]
        low_end = math.ceil(bins * self.bands[0]["SR"])
        mid_end = math.ceil(bins * (self.bands[0]["SR"] + self.bands[1]["SR"]))
        outputs, lengths = [], []
        for conv, band, (start, end) in zip(self.convs, self.bands, ((0, low_end), (low_end, mid_end), (mid_end, bins)),
                                            strict=True):
            part = x[:, :, start:end]
            stride, kernel = band["stride"], band["kernel"]
            total = kernel - stride if stride == 1 else (stride - part.shape[2] % stride) % stride
            outputs.append(conv(F.pad(part, (0, 0, total // 2, total - total // 2))))
            lengths.append(end - start)
        return outputs, lengths


class DownBlock(nn.Module):
    """Sparse down-sampling, a convolution module per band over time, a global 3x3 convolution."""

    def __init__(self, channels_in: int, channels: int, bands: list[dict[str, Any]], depths: list[int],
                 compress: float, kernel: int) -> None:
        super().__init__()
        self.SDlayer = SparseDown(channels_in, channels, bands)
        self.conv_modules = nn.ModuleList(ConvolutionModule(channels, depth, compress, kernel) for depth in depths)
        self.globalconv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[int], list[int]]:
        parts, original = self.SDlayer(x)
        done = []
        for module, part in zip(self.conv_modules, parts, strict=True):
            batch, channels, bins, frames = part.shape
            flat = part.permute(0, 2, 1, 3).reshape(-1, channels, frames)
            done.append(F.gelu(module(flat).view(batch, bins, channels, frames).permute(0, 2, 1, 3)))
        full = torch.cat(done, dim=2)
        return self.globalconv(full), full, [part.shape[2] for part in done], original


class Fusion(nn.Module):
    """The skip added, then a gated 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels * 2, channels * 2, 3, 1, 1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return F.glu(self.conv((x + skip).repeat(1, 2, 1, 1)), dim=1)


class SparseUp(nn.Module):
    """Each band transposed-convolved back up, trimmed to its original bins."""

    def __init__(self, channels_in: int, channels: int, bands: list[dict[str, Any]]) -> None:
        super().__init__()
        self.convtrs = nn.ModuleList(nn.ConvTranspose2d(channels_in, channels, [band["kernel"], 1],
                                                        [band["stride"], 1]) for band in bands)

    def forward(self, x: Tensor, lengths: list[int], original: list[int]) -> Tensor:
        edges = (0, lengths[0], lengths[0] + lengths[1], x.shape[2])
        outputs = []
        for index, convtr in enumerate(self.convtrs):
            out = convtr(x[:, :, edges[index]:edges[index + 1]])
            skip = abs(original[index] - out.shape[2]) // 2
            outputs.append(out[:, :, skip:skip + original[index]])
        return torch.cat(outputs, dim=2)


class DualPath(nn.Module):
    """A bidirectional LSTM across frequency, then one across time, each normed and residual."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList(nn.LSTM(channels, hidden, num_layers=1, bidirectional=True,
                                                 batch_first=True) for _ in range(2))
        self.linear_layers = nn.ModuleList(nn.Linear(hidden * 2, channels) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, bins, frames = x.shape
        y = self.norm_layers[0](x).transpose(1, 3).reshape(batch * frames, bins, channels)
        y = self.linear_layers[0](self.lstm_layers[0](y)[0])
        x = x + y.view(batch, frames, bins, channels).transpose(1, 3)
        y = self.norm_layers[1](x).transpose(1, 2).reshape(batch * bins, channels, frames).transpose(1, 2)
        y = self.linear_layers[1](self.lstm_layers[1](y)[0])
        return x + y.transpose(1, 2).reshape(batch, bins, channels, frames).transpose(1, 2)


class SeparationNet(nn.Module):
    """Dual-path layers; between them the features go to the time axis's (orthonormal) real FFT and back."""

    def __init__(self, channels: int, expand: int, layers: int) -> None:
        super().__init__()
        self.dp_modules = nn.ModuleList(DualPath(channels * (2 if i % 2 else 1), expand) for i in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.dp_modules):
            x = layer(x).float()
            if index % 2 == 0:
                spectrum = torch.fft.rfft(x, dim=3, norm="ortho")
                x = torch.cat([spectrum.real, spectrum.imag], dim=1)
            else:
                half = x.shape[1] // 2
                x = torch.fft.irfft(torch.complex(x[:, :half], x[:, half:]), dim=3, norm="ortho")
        return x


def _fields(config: ModelConfig) -> dict[str, Any]:
    fields = model_fields(config, DEFAULTS, frozenset(), {})
    if fields["audio_channels"] != 2:
        raise ConfigError("model.audio_channels must be 2: only stereo models are served")
    sources = fields["sources"] or list(config.instruments)
    if len(sources) != len(config.instruments):
        raise ConfigError(f"model.sources has {len(sources)} stems but training.instruments {len(config.instruments)}")
    for key in ("band_SR", "band_stride", "band_kernel", "conv_depths"):
        if not isinstance(fields[key], list | tuple) or len(fields[key]) != len(BANDS):
            raise ConfigError(f"model.{key} must list three values (low, mid, high bands)")
    if fields["num_dplayer"] % 2:
        raise ConfigError("model.num_dplayer must be even: every other layer runs on the time axis's FFT")
    return {**fields, "sources": sources}


class SCNet(FamilyModel):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        fields = _fields(config)
        self.stems, dims = len(fields["sources"]), list(fields["dims"])
        self.dims0 = dims[0]
        self.n_fft, self.hop, self.win = fields["nfft"], fields["hop_size"], fields["win_size"]
        self.normalized = fields["normalized"]
        self.register_buffer("window", torch.ones(self.win), persistent=False)  # MSST passes no window
        bands = [{"SR": sr, "stride": stride, "kernel": kernel}
                 for sr, stride, kernel in zip(fields["band_SR"], fields["band_stride"], fields["band_kernel"],
                                               strict=True)]
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for index in range(len(dims) - 1):
            self.encoder.append(DownBlock(dims[index], dims[index + 1], bands, fields["conv_depths"],
                                          fields["compress"], fields["conv_kernel"]))
            out = dims[index] * (self.stems if index == 0 else 1)
            self.decoder.insert(0, nn.Sequential(Fusion(dims[index + 1]), SparseUp(dims[index + 1], out, bands)))
        self.separation_net = SeparationNet(dims[-1], fields["expand"], fields["num_dplayer"])

    def outputs(self) -> int:
        return self.stems

    def forward(self, audio: Tensor) -> Tensor:
        batch, channels, length = audio.shape
        padding = self.hop - length % self.hop
        if (length + padding) // self.hop % 2 == 0:  # an odd frame count: the time axis's FFT needs even
            padding += self.hop
        audio = F.pad(audio, (0, padding))
        spec = torch.stft(audio.reshape(-1, audio.shape[-1]), self.n_fft, self.hop, self.win, self.window,
                          center=True, normalized=self.normalized, return_complex=True)
        x = torch.view_as_real(spec).permute(0, 3, 1, 2)
        bins, frames = x.shape[2], x.shape[3]
        x = x.reshape(batch, channels * 2, bins, frames)
        saved = []
        for block in self.encoder:
            x, skip, lengths, original = block(x)
            saved.append((skip, lengths, original))
        x = self.separation_net(x)
        for fusion, up in self.decoder:  # type: ignore[misc]
            skip, lengths, original = saved.pop()
            x = up(fusion(x, skip), lengths, original)
        x = x.float().reshape(-1, 2, bins, frames).permute(0, 2, 3, 1)
        out = torch.istft(torch.view_as_complex(x.contiguous()), self.n_fft, self.hop, self.win, self.window,
                          center=True, normalized=self.normalized)
        return out.reshape(batch, self.stems, channels, -1)[..., :-padding]
