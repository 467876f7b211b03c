"""MSST's chunked inference (`demix`, its generic mode) as model calls for the scheduler.

The mix is reflect-padded by `chunk_size - step` at both ends when it is long enough; chunks of
`chunk_size` start every `step = chunk_size // num_overlap` samples, the last ones padded (reflect
when more than half a chunk is left, zeros otherwise); `batch_size` chunks make one call. Each
call's chunks are weighted by a window that fades in and out linearly over a tenth of a chunk,
except that a call holding only the first chunk does not fade in and a call holding the last does
not fade out (the rule applies to every chunk of that call, as in MSST); the weighted sum is
divided by the summed weights, samples of zero weight give 0, and the padding is cut off again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..engine.inference import ModelCall, Precision, Steps
from .config import Inference

FADE_FRACTION = 10  # the window fades over chunk_size // 10 samples at each end
NORMALIZE_EPSILON = float(torch.finfo(torch.float32).eps)  # a deviation below it counts as silence


@dataclass(frozen=True)
class Plan:
    """Where the chunks of one mix start, grouped into calls, and the padding around the mix."""

    border: int  # reflect padding at each end (0: none)
    padded_length: int
    chunk: int
    fade: int
    calls: tuple[tuple[int, ...], ...]  # chunk starts (in the padded mix), one tuple per call


def plan(length: int, settings: Inference) -> Plan:
    """The chunks MSST's `demix` cuts a mix of `length` samples into."""
    chunk = settings.chunk_size
    step = chunk // settings.num_overlap
    border = chunk - step
    if not (length > 2 * border and border > 0):
        border = 0
    total = length + 2 * border
    starts = list(range(0, total, step))
    calls = tuple(tuple(starts[i:i + settings.batch_size]) for i in range(0, len(starts), settings.batch_size))
    return Plan(border, total, chunk, chunk // FADE_FRACTION, calls)


def fade_window(chunk: int, fade: int) -> Tensor:
    window = torch.ones(chunk)
    if fade > 0:
        window[-fade:] = torch.linspace(1, 0, fade)
        window[:fade] = torch.linspace(0, 1, fade)
    return window


def _call_window(base: Tensor, starts: Sequence[int], layout: Plan, step: int) -> Tensor:
    window = base.clone()
    if layout.fade > 0:
        if starts[-1] == 0:  # the call ends with the first chunk: no fade-in
            window[:layout.fade] = 1
        elif starts[-1] + step >= layout.padded_length:  # the call holds the last chunk: no fade-out
            window[-layout.fade:] = 1
    return window


def _chunk(mix: Tensor, start: int, chunk: int) -> Tensor:
    part = mix[:, start:start + chunk]
    missing = chunk - part.shape[-1]
    if not missing:
        return part
    return F.pad(part, (0, missing), mode="reflect" if part.shape[-1] > chunk // 2 else "constant")


def demix_steps(model: nn.Module, mix: Tensor, settings: Inference, precision: Precision,
                heads: int, keep: slice | None = None) -> Steps:
    """The stems (`heads`, channels, time) of `mix` (channels, time); `keep` selects the model's
    outputs that are stems where it returns more."""
    mean = std = None
    if settings.normalize:
        reference = mix.mean(0)
        mean, std = reference.mean(), reference.std(correction=0)
        if not bool(torch.isfinite(std)) or float(std) <= NORMALIZE_EPSILON:
            std = torch.ones_like(std)
        mix = (mix - mean) / std
    length = mix.shape[-1]
    layout = plan(length, settings)
    step = settings.chunk_size // settings.num_overlap
    if layout.border:
        mix = F.pad(mix, (layout.border, layout.border), mode="reflect")
    base = fade_window(layout.chunk, layout.fade).to(mix.device)
    result = torch.zeros(heads, mix.shape[0], layout.padded_length, device=mix.device)
    weights = torch.zeros(layout.padded_length, device=mix.device)
    for starts in layout.calls:
        batch = torch.stack([_chunk(mix, start, layout.chunk) for start in starts])
        out = yield ModelCall(model, batch, precision)
        if keep is not None:
            out = out[:, keep]
        window = _call_window(base, starts, layout, step)
        for index, start in enumerate(starts):
            kept = min(layout.chunk, layout.padded_length - start)
            result[..., start:start + kept] += out[index, ..., :kept] * window[:kept]
            weights[start:start + kept] += window[:kept]
    stems = torch.nan_to_num(result / weights, nan=0.0)
    if layout.border:
        stems = stems[..., layout.border:-layout.border]
    if mean is not None and std is not None:
        stems = stems * std + mean
    return stems


def count_calls(length: int, settings: Inference) -> int:
    """How many model calls `demix_steps` makes for `length` samples."""
    return len(plan(length, settings).calls)
