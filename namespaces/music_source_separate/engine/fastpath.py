"""Faster forms of Demucs building blocks, taken only by `fast` calls on CPU.

`accelerate(model)` gives a loaded model's multi-head attention, DConv and 1x1 convolution
modules a subclass whose forward takes the fast form while `active(True)` holds (engine.forward
sets it for `fast` calls) and is the original forward otherwise. Weights, state dicts and `exact` runs are
untouched.

- Attention: the in- and out-projections as PyTorch computes them (bf16 under autocast), and
  softmax(q k^T) v in the native AVX512-BF16 kernel (native.py) instead of PyTorch's CPU flash
  attention, which runs bf16 no faster than fp32 on CPUs without AMX.
- DConv, the residual branch of each encoder and decoder layer, where its tensor outgrows the
  cache (the outermost layers): the second GroupNorm is folded
  into the 1x1 convolution before it (its statistics follow from the mean and covariance of the
  narrow hidden activation), the GLU, layer scale and residual add are one multiply-add, and rows
  go through in cache-sized blocks (of rows, or of time for the time branch's long rows); in
  fp32, which is more precise than autocast's bf16 here.
- HTDemucs's inverse STFT: an inverse real FFT of each frame and a four-way overlap-add with
  a cached window envelope, over just the samples Demucs keeps, instead of torch.istft on a
  spectrogram first padded with a zero frequency bin and zero frames (2x faster).
- 1x1 convolutions of a single item (the encoders' rewrite and channel resampling): one matrix
  product, the same bf16 GEMM without oneDNN's layout reorders (4x faster at 48 x 512 x 336).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from demucs.demucs import DConv
from demucs.htdemucs import HTDemucs
from demucs.transformer import LayerScale
from torch import Tensor, nn
from torch.nn import functional as F

from . import native

_ACTIVE: ContextVar[bool] = ContextVar("fastpath_active", default=False)
FUSE_MIN_ROWS = 256  # DConv inputs with fewer rows (batch x frequencies) fit the cache as they are
FUSE_BLOCK_ROWS = 64  # rows per block: a block's widest tensor (64 x 96 x 336 fp32) is 8 MiB
FUSE_MIN_TIME = 32768  # a single row this long (the time branch's outer layers) is blocked over time
FUSE_BLOCK_TIME = 16384  # steps per block of a long row: 96 x 16384 fp32 is 6 MiB


@contextmanager
def active(on: bool) -> Iterator[None]:
    token = _ACTIVE.set(on)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


_accelerated: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models already walked


def accelerate(model: nn.Module) -> nn.Module:
    """Give `model`'s HTDemucs, attention, plain DConv and 1x1 convolution modules their fast
    forms; the walk happens once per model, the first call (engine.forward calls it each time)."""
    if model in _accelerated:
        return model
    _accelerated.add(model)
    for module in model.modules():
        if type(module) is HTDemucs:
            module.__class__ = OverlapAddHTDemucs
        elif type(module) is nn.MultiheadAttention:
            module.__class__ = NativeAttention
        elif type(module) is DConv and len(module.layers) and all(_plain(layer) for layer in module.layers):
            module.__class__ = FusedDConv
        elif type(module) in (nn.Conv1d, nn.Conv2d) and _pointwise(module):  # type: ignore[arg-type]
            module.__class__ = PointwiseConv1d if type(module) is nn.Conv1d else PointwiseConv2d
    return model


def _pointwise(conv: nn.Conv1d | nn.Conv2d) -> bool:
    return (all(k == 1 for k in conv.kernel_size) and all(s == 1 for s in conv.stride)
            and all(p == 0 for p in conv.padding) and conv.groups == 1 and conv.padding_mode == "zeros")


def _pointwise_forward(conv: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor | None:
    """A 1x1 convolution of one item as the product weight @ x: oneDNN's convolution reorders
    the (channels, freq x time) plane into blocked layouts and back, a product reads it once."""
    if not (_ACTIVE.get() and x.dim() == conv.weight.dim() and x.shape[0] == 1 and conv.bias is not None):
        return None
    weight = conv.weight.flatten(1)
    out = torch.addmm(conv.bias[:, None], weight, x[0].flatten(1))
    return out.view(1, weight.shape[0], *x.shape[2:])


class PointwiseConv1d(nn.Conv1d):
    def forward(self, x: Tensor) -> Tensor:
        out = _pointwise_forward(self, x)
        return super().forward(x) if out is None else out


class PointwiseConv2d(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        out = _pointwise_forward(self, x)
        return super().forward(x) if out is None else out


class NativeAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose attention product runs in the native kernel when it can."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if (_ACTIVE.get() and not need_weights and key_padding_mask is None and attn_mask is None
                and not is_causal and query.dim() == 3 and not torch.is_grad_enabled()  # the kernel has no backward
                and self._plain() and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16 and native.library() is not None):
            out = self._native(query, key, value)
            if out is not None:
                return out, None
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)

    def _plain(self) -> bool:
        return bool(self._qkv_same_embed_dim and self.in_proj_bias is not None and self.bias_k is None
                and not self.add_zero_attn and self.head_dim == native.HEAD_DIM
                and (self.dropout == 0.0 or not self.training))

    def _native(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor | None:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, weight, bias = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        assert bias is not None
        if query is key and key is value:  # the projections PyTorch makes, in the same products
            q, k, v = F.linear(query, weight, bias).chunk(3, -1)
        elif key is value:
            q = F.linear(query, weight[:e], bias[:e])
            k, v = F.linear(key, weight[e:], bias[e:]).chunk(2, -1)
        else:
            q, k, v = (F.linear(x, weight[i * e:(i + 1) * e], bias[i * e:(i + 1) * e])
                       for i, x in enumerate((query, key, value)))
        heads = [t.view(*t.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)]
        out = native.attention(*heads)
        if out is None:
            return None
        merged = F.linear(out.transpose(1, 2).flatten(2), self.out_proj.weight, self.out_proj.bias)
        return merged if self.batch_first else merged.transpose(0, 1)


def _plain(layer: nn.Module) -> bool:
    """Conv1d, GroupNorm(1), GELU, 1x1 Conv1d, GroupNorm(1), GLU, LayerScale: no LSTM, no attention."""
    kinds = (nn.Conv1d, nn.GroupNorm, nn.GELU, nn.Conv1d, nn.GroupNorm, nn.GLU, LayerScale)
    if not isinstance(layer, nn.Sequential) or len(layer) != len(kinds):
        return False
    if not all(type(module) is kind for module, kind in zip(layer, kinds, strict=True)):
        return False
    conv2, norm1, norm2, glu = layer[3], layer[1], layer[4], layer[5]
    return bool(norm1.num_groups == 1 and norm2.num_groups == 1 and norm1.affine and norm2.affine
                and conv2.kernel_size == (1,) and conv2.bias is not None and conv2.groups == 1
                and glu.dim == 1 and layer[2].approximate == "none")


class FusedDConv(DConv):
    """DConv computed block by block with its second GroupNorm folded, for wide inputs."""

    def forward(self, x: Tensor) -> Any:
        if not (_ACTIVE.get() and x.dim() == 3 and x.device.type == "cpu" and x.dtype == torch.float32
                and all(p.dtype == torch.float32 for p in self.parameters())
                and (x.shape[0] >= FUSE_MIN_ROWS or x.shape[-1] >= FUSE_MIN_TIME)):
            return super().forward(x)  # type: ignore[no-untyped-call]
        with torch.autocast("cpu", enabled=False):
            x = x.float()
            # Channel-major memory: the frequency layers view the result as (batch, freq, channels,
            # time) and permute it to (batch, channels, freq, time), which is then contiguous.
            out = x.new_empty(x.shape[1], x.shape[0], x.shape[2]).transpose(0, 1)
            if x.shape[0] >= FUSE_MIN_ROWS:  # rows are independent: every layer, one block of rows at a time
                for start in range(0, x.shape[0], FUSE_BLOCK_ROWS):
                    rows = slice(start, start + FUSE_BLOCK_ROWS)
                    block = x[rows]
                    for index, layer in enumerate(self.layers):
                        last = index == len(self.layers) - 1
                        target = out[rows] if last else torch.empty_like(block)
                        block = _residual(block, *_folded(layer, block), target, block.shape[-1])
                return out
            for index, layer in enumerate(self.layers):  # long rows: statistics over all time first
                last = index == len(self.layers) - 1
                x = _residual(x, *_folded(layer, x), out if last else torch.empty_like(x), FUSE_BLOCK_TIME)
            return out


def _folded(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The layer's branch as one product per row n of x: scale * GLU(GroupNorm(conv2(h))), with
    h = GELU(GroupNorm(conv1(x))), is GLU(weight @ hs[n] + offset[n]); returns those three.

    With h centred over time (hc = h - hbar), y = W hc + (W hbar + b) per row, so GroupNorm's
    mean is the mean of mu = W hbar + b over channels and its variance is
    (sum_c w_c^T cov w_c + |mu - mean|^2) / channels, cov = hc hc^T / T: no pass over y.
    """
    assert isinstance(layer, nn.Sequential)
    conv1, norm1, _, conv2, norm2, _, scale = layer  # as _plain checked
    assert isinstance(norm1, nn.GroupNorm) and isinstance(conv2, nn.Conv1d) and isinstance(norm2, nn.GroupNorm)
    assert conv2.bias is not None
    h = F.gelu(F.group_norm(conv1(x), 1, norm1.weight, norm1.bias, norm1.eps))
    hbar = h.mean(-1, keepdim=True)
    hc = h - hbar
    w = conv2.weight[:, :, 0]
    mu = (w @ hbar).squeeze(-1) + conv2.bias
    centred = mu - mu.mean(-1, keepdim=True)
    cov = torch.bmm(hc, hc.transpose(1, 2)) / h.shape[-1]
    var = (((w @ cov) * w).sum(-1) + centred * centred).mean(-1, keepdim=True)
    rstd = torch.rsqrt(var + norm2.eps)
    assert isinstance(scale, LayerScale)
    layer_scale: Tensor = scale.scale
    halves = torch.cat([layer_scale, torch.ones_like(layer_scale)])  # layer scale: the GLU's value half
    gain = halves * norm2.weight
    offset = gain * rstd * centred + halves * norm2.bias
    return gain[:, None] * w, offset, hc * rstd[:, :, None]


def _residual(x: Tensor, weight: Tensor, offset: Tensor, hs: Tensor, out: Tensor, step: int) -> Tensor:
    """out = x + GLU(weight @ hs + offset), `step` time steps at a time."""
    for start in range(0, x.shape[-1], step):
        span = slice(start, start + step)
        z = torch.baddbmm(offset[:, :, None], weight.expand(x.shape[0], -1, -1), hs[..., span])
        value, gate = z.chunk(2, 1)
        torch.addcmul(x[..., span], value, gate.sigmoid_(), out=out[..., span])
    return out


class OverlapAddHTDemucs(HTDemucs):
    """HTDemucs whose inverse STFT is computed directly for the samples its forward keeps."""

    def _ispec(self, z: Tensor, length: int | None = None, scale: int = 0) -> Tensor:
        out = _overlap_add_ispec(z, length, self.hop_length) if _ACTIVE.get() and scale == 0 else None
        return super()._ispec(z, length, scale) if out is None else out  # type: ignore[no-untyped-call]


def _overlap_add_ispec(z: Tensor, length: int | None, hop: int) -> Tensor | None:
    """HTDemucs._ispec(z, length): torch.istft (hann window of 4 hops, normalised, centred) of z
    with a zero Nyquist bin and two zero frames on each side, trimmed by hop // 2 * 3 at the
    start to `length`. Frame f of z lands at (f + 2) * hop of the uncentred signal."""
    *lead, freqs, frames = z.shape
    n_fft = 4 * hop
    start = n_fft // 2 + hop // 2 * 3 - 2 * hop  # into the overlap-add of z's own frames
    if (length is None or z.dtype != torch.complex64 or 2 * freqs != n_fft or z.device.type != "cpu"
            or start + length > (frames + 3) * hop):
        return None
    spec = z.new_empty(z.numel() // (freqs * frames), frames, freqs + 1)
    spec[..., :freqs] = z.reshape(-1, freqs, frames).transpose(1, 2)
    spec[..., freqs] = 0  # the Nyquist bin: irfft is fastest given all n_fft // 2 + 1 bins
    grains = torch.fft.irfft(spec, n=n_fft, dim=-1, norm="ortho").view(-1, frames, 4, hop)
    window = torch.hann_window(n_fft).view(4, hop)
    blocks = grains.new_empty(grains.shape[0], frames + 3, hop)  # block b: samples b * hop ...
    torch.mul(grains[:, :, 0], window[0], out=blocks[:, :frames])
    blocks[:, frames:].zero_()
    for quarter in range(1, 4):
        blocks[:, quarter:quarter + frames].addcmul_(grains[:, :, quarter], window[quarter])
    out: Tensor = blocks.flatten(1)[:, start:start + length] * _inverse_envelope(frames, hop, start, length)
    return out.view(*lead, length)


@functools.lru_cache(maxsize=16)
def _inverse_envelope(frames: int, hop: int, start: int, length: int) -> Tensor:
    """1 / the sum of squared windows torch.istft divides by, over the kept samples (the padded
    frames count: their windows overlap the first and last kept samples)."""
    squared = (torch.hann_window(4 * hop) ** 2).view(4, hop)
    total = frames + 4
    envelope = torch.zeros(total + 3, hop)
    for quarter in range(4):
        envelope[quarter:quarter + total] += squared[quarter]
    kept: Tensor = envelope.flatten()[start + 2 * hop:start + 2 * hop + length]
    return kept.reciprocal()
