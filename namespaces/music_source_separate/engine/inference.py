"""Chunked Demucs inference: overlap-add over the model's segment, shifts, bags, precision."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import fastpath
from .ensemble import Ensemble, Member

OVERLAP = 0.25  # Demucs's default overlap between consecutive segments
MAX_SHIFT_SECONDS = 0.5  # Demucs's shift trick moves the input by up to half a second
NORM_EPSILON = 1e-8  # keeps silence from dividing by a zero standard deviation


class Precision(Enum):
    """`exact` runs in fp32; `fast` in bf16 (CPU with bf16 support, CUDA) or fp16 (other CUDA)."""

    EXACT = "exact"
    FAST = "fast"


@dataclass(frozen=True)
class RunOptions:
    """How to run a model over a mix; the defaults are Demucs's own minus the random shift."""

    shifts: int = 0
    overlap: float = OVERLAP
    split: bool = True
    segment: float | None = None  # seconds; shorter than the model's own for HTDemucs
    seed: int = 0
    precision: Precision = Precision.EXACT


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


def padded_view(mix: Tensor, offset: int, length: int, target: int) -> Tensor:
    """`length` samples at `offset`, centred in `target`, filled from neighbours, zeros past the ends."""
    start = offset - (target - length) // 2
    end = start + target
    inner = mix[..., max(0, start):min(mix.shape[-1], end)]
    return F.pad(inner, (max(0, -start), max(0, end - mix.shape[-1])))


def center_trim(tensor: Tensor, length: int) -> Tensor:
    delta = tensor.shape[-1] - length
    return tensor[..., delta // 2: delta // 2 + length]


def segment_samples(model: nn.Module, segment: float | None = None) -> int:
    own = float(model.segment)
    return int(model.samplerate * (own if segment is None else min(segment, own)))


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager[object]:
    """The reduced-precision context for `fast`, or nothing where it would not be safe or fast."""
    if precision is Precision.EXACT:
        return nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def mha_fastpath(enabled: bool) -> Iterator[None]:
    """PyTorch's fused encoder-layer path materialises the attention matrix; without it
    attention goes through scaled_dot_product_attention (flash on CPU): same result, faster."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@dataclass(frozen=True)
class ModelCall:
    """One network call a separation needs: the unit of work a scheduler interleaves."""

    model: nn.Module
    input: Tensor
    precision: Precision


Steps = Generator[ModelCall, Tensor, Tensor]  # yields calls, receives their outputs, returns stems


def forward(call: ModelCall) -> Tensor:
    """Run one call (inside torch.inference_mode, which the caller holds); `fast` calls on CPU
    take the fast forms of attention and DConv (fastpath.py)."""
    fast = call.precision is Precision.FAST and call.input.device.type == "cpu"
    if fast:
        fastpath.accelerate(call.model)
    with autocast(call.input.device, call.precision), mha_fastpath(False), fastpath.active(fast):
        return call.model(call.input).float()


def drive(steps: Steps, run: Callable[[ModelCall], Tensor] = forward) -> Tensor:
    """Run every call of `steps` in order, here: the sequential counterpart of a scheduler."""
    with torch.inference_mode():
        try:
            call = next(steps)
            while True:
                call = steps.send(run(call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class ChunkRunner:
    """The calls that run one network over a mix, chunk by chunk.

    Spans are (start, length) into a root tensor: a segment's context is read from the
    root past the span's ends, exactly as Demucs's TensorChunk does.
    """

    def __init__(self, model: nn.Module, options: RunOptions, rng: random.Random) -> None:
        self.model = model
        self.options = options
        self.rng = rng

    def _call(self, padded: Tensor) -> ModelCall:
        return ModelCall(self.model, padded, self.options.precision)

    def _input_length(self, length: int, segment: int) -> int:
        if type(self.model).__name__ == "HTDemucs" and self.options.segment is not None:
            return segment  # as demucs.apply: an overridden segment is the model's input length
        valid = getattr(self.model, "valid_length", None)
        return int(valid(length)) if valid is not None else length

    def split(self, root: Tensor, start: int, length: int) -> Steps:
        """Overlap-add over segments, weighted by Demucs's transition.

        The output is prepared and normalised a region at a time, between model calls: zeroed as
        each chunk first reaches it, divided by its weight once no later chunk overlaps it. So no
        step between two calls passes over the whole output (for a 10-minute song, 850 MB), which
        would hold up every other request waiting for the worker."""
        batch, channels = root.shape[:2]
        segment = segment_samples(self.model, self.options.segment)
        weight = transition_weight(segment).to(root.device)
        out = torch.empty(batch, len(self.model.sources), channels, length, device=root.device)
        weight_sum = torch.empty(length, device=root.device)
        chunks = plan_chunks(length, segment, self.options.overlap)
        zeroed = normalised = 0  # samples [0, zeroed) are initialised, [0, normalised) final
        for index, chunk in enumerate(chunks):
            end = chunk.offset + chunk.length
            if end > zeroed:
                out[..., zeroed:end].zero_()
                weight_sum[zeroed:end].zero_()
                zeroed = end
            target = self._input_length(chunk.length, segment)
            estimate = yield self._call(padded_view(root, start + chunk.offset, chunk.length, target))
            span = slice(chunk.offset, end)
            out[..., span] += weight[:chunk.length] * center_trim(estimate, chunk.length)
            weight_sum[span] += weight[:chunk.length]
            final = chunks[index + 1].offset if index + 1 < len(chunks) else length
            if final > normalised:  # no later chunk reaches before `final`
                region = slice(normalised, final)
                assert weight_sum[region].min() > 0, "every sample must be covered by a segment"
                out[..., region] /= weight_sum[region]
                normalised = final
        return out

    def whole(self, root: Tensor, start: int, length: int) -> Steps:
        padded = padded_view(root, start, length, self._input_length(length, length))
        estimate = yield self._call(padded)
        return center_trim(estimate, length)

    def run(self, mix: Tensor) -> Steps:
        """All shifts of the mix (a seeded random offset each), split or whole, averaged."""
        apply = self.split if self.options.split else self.whole
        length = mix.shape[-1]
        if not self.options.shifts:
            return (yield from apply(mix, 0, length))
        max_shift = int(MAX_SHIFT_SECONDS * self.model.samplerate)
        padded = F.pad(mix, (max_shift, max_shift))
        total: Tensor | None = None
        for _ in range(self.options.shifts):
            offset = self.rng.randint(0, max_shift)
            estimate = (yield from apply(padded, offset, length + max_shift - offset))[..., max_shift - offset:]
            total = estimate if total is None else total + estimate
        assert total is not None
        return total / self.options.shifts


def count_chunks(ensemble: Ensemble, total: int, options: RunOptions = RunOptions(),
                 only_stem: str | None = None) -> int:
    """How many model calls the separation of `total` samples makes (same random draws)."""
    rng = random.Random(options.seed)
    calls = 0
    for member in iter_members(ensemble, only_stem):
        own = getattr(member.model, "count_calls", None)
        if own is not None:  # a model with its own inference (families/)
            calls += own(total)
            continue
        segment = segment_samples(member.model, options.segment)
        max_shift = int(MAX_SHIFT_SECONDS * member.model.samplerate)
        spans = [total + max_shift - rng.randint(0, max_shift) for _ in range(options.shifts)] or [total]
        calls += sum(len(plan_chunks(span, segment, options.overlap)) if options.split else 1 for span in spans)
    return calls


def iter_members(ensemble: Ensemble, only_stem: str | None) -> Iterator[Member]:
    """All members, or only the specialist that alone is weighted for `only_stem`."""
    if only_stem is None or len(ensemble.members) == 1:
        yield from ensemble.members
        return
    column = ensemble.sources.index(only_stem)
    for member in ensemble.members:
        if member.weights[column] > 0 and sum(1 for w in member.weights if w > 0) == 1:
            yield member
            return
    raise ValueError(f"{ensemble.name} has no specialist for {only_stem!r}")


def ensemble_steps(ensemble: Ensemble, mix: Tensor, options: RunOptions = RunOptions(),
                   only_stem: str | None = None) -> Steps:
    """Weighted average of the members' estimates, source by source (batch, sources, channels, time)."""
    estimates: Tensor | None = None
    totals = torch.zeros(len(ensemble.sources))
    rng = random.Random(options.seed)  # one sequence across members, as Demucs draws them
    for member in iter_members(ensemble, only_stem):
        weights = torch.tensor(member.weights, dtype=torch.float32)
        out = yield from ChunkRunner(member.model, options, rng).run(mix)
        if not bool((weights == 1).all()):  # x * 1 is x: the common single model skips a pass
            out.mul_(weights[:, None, None].to(mix.device))  # in place: no second copy of the output
        estimates = out if estimates is None else estimates.add_(out)
        totals += weights
    assert estimates is not None
    # A source no member is weighted for (a specialist run alone) keeps a zero estimate.
    divisor = totals.clamp(min=1e-12)
    if not bool((divisor == 1).all()):
        estimates.div_(divisor[:, None, None].to(mix.device))
    return estimates


def separation_steps(ensemble: Ensemble, mix: Tensor, options: RunOptions = RunOptions(),
                     only_stem: str | None = None) -> Steps:
    """Stems (sources, channels, time) of `mix` (channels, time), normalised as Demucs does; a model
    that brings its own inference (families/: MSST's) runs that instead, with its own settings."""
    own = getattr(ensemble.members[0].model, "demix_steps", None)
    if own is not None:
        return (yield from own(mix, options.precision))  # type: ignore[no-any-return]
    reference = mix.mean(0)
    mean = reference.mean()
    std = (reference.std() if mix.shape[-1] > 1 else torch.tensor(0.0)) + NORM_EPSILON
    stems = yield from ensemble_steps(ensemble, ((mix - mean) / std)[None], options, only_stem)
    return stems[0].mul_(std).add_(mean)  # in place: the output is not copied again


def counting(run: Callable[[ModelCall], Tensor], on_chunk: Callable[[], None] | None
             ) -> Callable[[ModelCall], Tensor]:
    if on_chunk is None:
        return run

    def counted(call: ModelCall) -> Tensor:
        out = run(call)
        on_chunk()
        return out
    return counted


def separate(ensemble: Ensemble, mix: Tensor, options: RunOptions = RunOptions(),
             on_chunk: Callable[[], None] | None = None, only_stem: str | None = None) -> Tensor:
    """`separation_steps` run here, in order."""
    return drive(separation_steps(ensemble, mix, options, only_stem), counting(forward, on_chunk))
