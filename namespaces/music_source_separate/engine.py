"""Chunked Demucs inference: overlap-add over the model's segment, bags with per-source weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .store import Ensemble

OVERLAP = 0.25  # Demucs's default overlap between consecutive segments
NORM_EPSILON = 1e-8  # keeps silence from dividing by a zero standard deviation


@dataclass(frozen=True)
class Chunk:
    """One segment of the mix: where it starts and how many samples of it are kept."""

    offset: int
    length: int


def plan_chunks(total: int, segment: int, overlap: float = OVERLAP) -> list[Chunk]:
    stride = int((1 - overlap) * segment)
    return [Chunk(offset, min(segment, total - offset)) for offset in range(0, total, stride)]


def transition_weight(segment: int) -> Tensor:
    """Demucs's triangle: highest mid-segment, so overlapping chunks cross-fade linearly."""
    half = segment // 2
    weight = torch.cat([torch.arange(1, half + 1), torch.arange(segment - half, 0, -1)]).float()
    return weight / weight.max()


def padded_view(mix: Tensor, chunk: Chunk, target: int) -> Tensor:
    """The chunk centred in `target` samples, filled from its neighbours, zeros past the ends."""
    start = chunk.offset - (target - chunk.length) // 2
    end = start + target
    inner = mix[..., max(0, start):min(mix.shape[-1], end)]
    return F.pad(inner, (max(0, -start), max(0, end - mix.shape[-1])))


def center_trim(tensor: Tensor, length: int) -> Tensor:
    delta = tensor.shape[-1] - length
    return tensor[..., delta // 2: delta // 2 + length]


def _model_input_length(model: nn.Module, length: int) -> int:
    valid = getattr(model, "valid_length", None)
    return int(valid(length)) if valid is not None else length


def segment_samples(model: nn.Module) -> int:
    return int(model.samplerate * float(model.segment))


def apply_single(model: nn.Module, mix: Tensor, overlap: float = OVERLAP,
                 on_chunk: Callable[[], None] | None = None) -> Tensor:
    """Run one network over `mix` (batch, channels, time) in overlapping segments."""
    batch, channels, total = mix.shape
    segment = segment_samples(model)
    weight = transition_weight(segment).to(mix.device)
    out = torch.zeros(batch, len(model.sources), channels, total, device=mix.device)
    weight_sum = torch.zeros(total, device=mix.device)
    for chunk in plan_chunks(total, segment, overlap):
        padded = padded_view(mix, chunk, _model_input_length(model, chunk.length))
        estimate = center_trim(model(padded), chunk.length)
        span = slice(chunk.offset, chunk.offset + chunk.length)
        out[..., span] += weight[:chunk.length] * estimate
        weight_sum[span] += weight[:chunk.length]
        if on_chunk is not None:
            on_chunk()
    assert weight_sum.min() > 0, "every sample must be covered by a segment"
    return out / weight_sum


def apply_ensemble(ensemble: Ensemble, mix: Tensor, overlap: float = OVERLAP,
                   on_chunk: Callable[[], None] | None = None) -> Tensor:
    """Weighted average of the members' estimates, source by source."""
    estimates: Tensor | None = None
    totals = torch.zeros(len(ensemble.sources))
    for member in ensemble.members:
        weights = torch.tensor(member.weights, dtype=torch.float32)
        out = apply_single(member.model, mix, overlap, on_chunk) * weights[:, None, None].to(mix.device)
        estimates = out if estimates is None else estimates + out
        totals += weights
    assert estimates is not None
    # A source no member is weighted for (a specialist run alone) keeps a zero estimate.
    return estimates / totals.clamp(min=1e-12)[:, None, None].to(mix.device)


def count_chunks(ensemble: Ensemble, total: int) -> int:
    return sum(len(plan_chunks(total, segment_samples(m.model))) for m in ensemble.members)


def separate(ensemble: Ensemble, mix: Tensor,
             on_chunk: Callable[[], None] | None = None) -> Tensor:
    """Stems (sources, channels, time) of `mix` (channels, time), normalised as Demucs does."""
    reference = mix.mean(0)
    mean, std = reference.mean(), reference.std() if mix.shape[-1] > 1 else torch.tensor(0.0)
    with torch.inference_mode():
        stems = apply_ensemble(ensemble, ((mix - mean) / (std + NORM_EPSILON))[None], on_chunk=on_chunk)[0]
    return stems * (std + NORM_EPSILON) + mean
