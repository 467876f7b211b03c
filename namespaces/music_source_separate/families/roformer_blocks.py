"""The pieces both RoFormers are built from: RMS norm, rotary positions, gated attention,
linear attention, feed-forward, the axial transformer stack, band split and mask estimation.

Parameter names follow the MSST checkpoints (`to_qkv`, `to_gates`, `net.1`, `to_freqs.0.0.2`, ...),
so their state dicts load as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ROTARY_THETA = 10000.0  # the rotary embedding's base, as the checkpoints were trained with


class RMSNorm(nn.Module):
    """x / |x| * sqrt(dim) * gamma."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class Rotary(nn.Module):
    """Rotary position embedding over the sequence axis, rotating interleaved pairs of features.

    `freqs` is a (frozen) parameter because the checkpoints carry it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inverse = 1.0 / (ROTARY_THETA ** (torch.arange(0, dim, 2)[:dim // 2].float() / dim))
        self.freqs = nn.Parameter(inverse, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """`x` (..., sequence, dim) with each position's pairs rotated by its angles."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=x.dtype).to(self.freqs.dtype)
        angles = (positions[:, None] * self.freqs).repeat_interleave(2, dim=-1)
        pairs = x.unflatten(-1, (-1, 2))
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (x * angles.cos() + turned * angles.sin()).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary: Rotary) -> None:
        super().__init__()
        self.heads = heads
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False))
        self.rotary_embed = rotary

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # 3 b h n d
        out = F.scaled_dot_product_attention(self.rotary_embed(q), self.rotary_embed(k), v)
        out = out * self.to_gates(x).sigmoid().transpose(1, 2)[..., None]
        return self.to_out(out.transpose(1, 2).flatten(2))


class LinearAttention(nn.Module):
    """Attention across the feature axis (cross-covariance, El-Nouby et al. 2021), with l2-normed
    queries and keys, a learned temperature and a fixed scale of 8."""

    SCALE = 8.0

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(OrderedDict([("0", nn.Linear(dim, 3 * heads * dim_head, bias=False))]))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_out = nn.Sequential(OrderedDict([("1", nn.Linear(heads * dim_head, dim, bias=False))]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 4, 1)  # 3 b h d n
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        q = q * self.temperature.exp()
        attention = (q @ k.transpose(-1, -2) * self.SCALE).softmax(dim=-1)
        out = attention @ v  # b h d n
        return self.to_out(out.permute(0, 3, 1, 2).flatten(2))


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    """Norm, widen, GELU, narrow (indices as the checkpoints number them)."""
    inner = int(dim * mult)
    return nn.Sequential(OrderedDict([("0", RMSNorm(dim)), ("1", nn.Linear(dim, inner)), ("2", nn.GELU()),
                                      ("4", nn.Linear(inner, dim))]))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: float = 4) -> None:
        super().__init__()
        self.net = feed_forward(dim, mult)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Pre-norm residual blocks of attention and feed-forward, optionally normed at the end."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, rotary: Rotary | None,
                 norm_output: bool) -> None:
        super().__init__()
        attention = (lambda: Attention(dim, heads, dim_head, rotary)) if rotary is not None \
            else (lambda: LinearAttention(dim, heads, dim_head))
        self.layers = nn.ModuleList(nn.ModuleList([attention(), FeedForward(dim)]) for _ in range(depth))
        self.norm: nn.Module = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for attention, feed in self.layers:  # type: ignore[misc]
            x = attention(x) + x
            x = feed(x) + x
        return self.norm(x)  # type: ignore[no-any-return]


def axial_layers(dim: int, depth: int, heads: int, dim_head: int, time_depth: int, freq_depth: int,
                 linear_depth: int, norm_output: bool) -> nn.ModuleList:
    """`depth` layers of (linear attention over all tokens,) time attention, frequency attention, in
    the checkpoints' order; one rotary embedding shared by every time transformer, one by every
    frequency transformer, as in training."""
    time_rotary, freq_rotary = Rotary(dim_head), Rotary(dim_head)
    layers = nn.ModuleList()
    for _ in range(depth):
        blocks = [Transformer(dim, linear_depth, heads, dim_head, None, norm_output)] if linear_depth > 0 else []
        blocks += [Transformer(dim, time_depth, heads, dim_head, time_rotary, norm_output),
                   Transformer(dim, freq_depth, heads, dim_head, freq_rotary, norm_output)]
        layers.append(nn.ModuleList(blocks))
    return layers


def run_axial(layers: nn.ModuleList, x: Tensor, skip_connection: bool) -> Tensor:
    """`x` (batch, time, bands, dim) through the layers; with `skip_connection` each layer's input
    also gets the outputs of all layers before it."""
    kept: list[Tensor] = []
    for block in layers:
        *linear, time, freq = block  # type: ignore[misc]
        batch, frames, bands, dim = x.shape
        if linear:
            x = linear[0](x.reshape(batch, frames * bands, dim)).reshape(batch, frames, bands, dim)
        for earlier in kept:
            x = x + earlier
        x = time(x.transpose(1, 2).reshape(batch * bands, frames, dim))
        x = x.reshape(batch, bands, frames, dim).transpose(1, 2)
        x = freq(x.reshape(batch * frames, bands, dim)).reshape(batch, frames, bands, dim)
        if skip_connection:
            kept.append(x)
    return x


class BandSplit(nn.Module):
    """Each band's features (its bins' real and imaginary parts, every channel) to `dim` features."""

    def __init__(self, dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths = list(widths)
        self.to_features = nn.ModuleList(
            nn.Sequential(OrderedDict([("0", RMSNorm(width)), ("1", nn.Linear(width, dim))])) for width in widths)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, time, sum of widths) -> (batch, time, bands, dim)."""
        return torch.stack([band(part) for band, part in zip(self.to_features, x.split(self.widths, dim=-1),
                                                              strict=True)], dim=-2)


def _mlp(dim: int, out: int, hidden: int, linears: int) -> nn.Sequential:
    """`linears` linear layers with tanh between them, numbered as nn.Sequential numbers them."""
    sizes = [dim, *([hidden] * (linears - 1)), out]
    modules: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        modules.append(nn.Linear(size_in, size_out))
        if index < linears - 1:
            modules.append(nn.Tanh())
    return nn.Sequential(*modules)


class MaskEstimator(nn.Module):
    """Per band: an MLP and a GLU from `dim` features back to the band's complex mask values."""

    def __init__(self, dim: int, widths: Sequence[int], linears: int, expansion: int) -> None:
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, 2 * width, dim * expansion, linears), nn.GLU(dim=-1)) for width in widths)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, time, bands, dim) -> (batch, time, sum of widths)."""
        return torch.cat([head(band) for head, band in zip(self.to_freqs, x.unbind(dim=-2), strict=True)], dim=-1)
