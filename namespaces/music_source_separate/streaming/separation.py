"""Stems of a mix read as blocks, handed on region by region as soon as they are final.

The whole-song computation (`engine.separation_steps`) normalises the mix by its statistics, runs
every member of the bag (every shift of it) over overlapping segments and averages the estimates.
Here the statistics come from a first pass over the blocks, and the segments of every member and
shift advance together over one window of the mix, so that memory holds about a segment of the
mix and of each estimate, whatever the song's length. Every frame goes through the same float32
operations in the same order as in the whole-song computation.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..engine.ensemble import Ensemble
from ..engine.inference import MAX_SHIFT_SECONDS, ModelCall, RunOptions, forward, iter_members
from .blocks import BlockSource
from .segments import SegmentRun
from .statistics import MixStatistics, measure
from .window import MixWindow


@dataclass(frozen=True)
class Region:
    """Final stems (sources, channels, frames) of the mix's frames from `start`, at the model's rate."""

    start: int
    stems: Tensor

    @property
    def stop(self) -> int:
        return self.start + int(self.stems.shape[-1])


@dataclass(frozen=True)
class MemberRuns:
    """One member of the bag: its per-source weights and its runs, one per shift (one without)."""

    weights: Tensor
    runs: tuple[SegmentRun, ...]


StreamSteps = Generator[ModelCall, Tensor, None]  # yields calls, receives their outputs
DEMUCS = RunOptions()  # Demucs's own options minus the random shift


def plan_members(ensemble: Ensemble, total: int, options: RunOptions, only_stem: str | None) -> list[MemberRuns]:
    """Every member's runs; the shifts drawn from one seeded sequence in Demucs's order."""
    rng = random.Random(options.seed)
    members = []
    for member in iter_members(ensemble, only_stem):
        max_shift = int(MAX_SHIFT_SECONDS * member.model.samplerate)
        starts = [rng.randint(0, max_shift) - max_shift for _ in range(options.shifts)] or [0]
        runs = tuple(SegmentRun(member.model, options, start, total) for start in starts)
        members.append(MemberRuns(torch.tensor(member.weights, dtype=torch.float32), runs))
    return members


class Mixer:
    """The final frames of every run combined as `engine.ensemble_steps` combines whole outputs:
    shifts averaged, members weighted per source and divided by the summed weights, scale restored."""

    def __init__(self, members: list[MemberRuns], shifts: int, mean: Tensor, std: Tensor) -> None:
        self.members = members
        self.shifts = shifts
        self.mean, self.std = mean, std
        totals = torch.zeros(len(members[0].weights))
        for member in members:
            totals += member.weights
        self.divisor = totals.clamp(min=1e-12)  # a source no member is weighted for stays zero
        self.emitted = 0

    def ready(self) -> int:
        """How many frames past those handed on every run has made final."""
        return min(run.ready_end for member in self.members for run in member.runs) - self.emitted

    def take(self) -> Region | None:
        count = self.ready()
        if count <= 0:
            return None
        estimates: Tensor | None = None
        for member in self.members:
            pieces = [run.take(count) for run in member.runs]
            out = pieces[0]
            for piece in pieces[1:]:
                out = out + piece
            if self.shifts:
                out = out / self.shifts
            if not bool((member.weights == 1).all()):
                out = out * member.weights[:, None, None].to(out.device)
            estimates = out if estimates is None else estimates + out
        assert estimates is not None
        if not bool((self.divisor == 1).all()):
            estimates = estimates / self.divisor[:, None, None].to(estimates.device)
        region = Region(self.emitted, estimates[0] * self.std.to(estimates.device) + self.mean.to(estimates.device))
        self.emitted += count
        return region


def stream_steps(ensemble: Ensemble, mix: BlockSource, statistics: MixStatistics, emit: Callable[[Region], None],
                 options: RunOptions = DEMUCS, only_stem: str | None = None,
                 device: torch.device | None = None) -> StreamSteps:
    """The model calls that separate `mix` (at the model's rate and channels), for a scheduler to run
    (`engine.forward` on each, under torch.inference_mode); each region, once final, goes to `emit`,
    in order and without gaps. `statistics` are the mix's own (`measure`, or a `Spool`'s)."""
    _check(ensemble, mix, statistics, options)
    total = mix.frames
    members = plan_members(ensemble, total, options, only_stem)
    runs = [run for member in members for run in member.runs]
    mean, std = statistics.scale()
    mixer = Mixer(members, options.shifts, mean, std)
    device = device or next(ensemble.members[0].model.parameters()).device
    window = MixWindow(mix.channels, total, device)
    blocks = mix.blocks()
    while mixer.emitted < total:
        block = next(blocks, None)
        if block is not None:
            window.append((torch.from_numpy(block) - mean) / std)
        elif window.end != total:
            raise ValueError(f"the mix ended after {window.end} of the {total} frames announced")
        yield from _run_ready(runs, window)
        while (region := mixer.take()) is not None:
            emit(region)
        window.drop_before(min((run.needs()[0] for run in runs if not run.done), default=total))
    if next(blocks, None) is not None:
        raise ValueError(f"the mix has more frames than the {total} announced")


def _check(ensemble: Ensemble, mix: BlockSource, statistics: MixStatistics, options: RunOptions) -> None:
    if not options.split:
        raise ValueError("a stream is separated by segments: split must be on")
    if (mix.rate, mix.channels) != (ensemble.samplerate, ensemble.audio_channels):
        raise ValueError(f"the mix must be at {ensemble.samplerate} Hz with {ensemble.audio_channels} channels")
    if statistics.frames != mix.frames:
        raise ValueError(f"statistics of {statistics.frames} frames for a mix of {mix.frames}")


def _run_ready(runs: list[SegmentRun], window: MixWindow) -> StreamSteps:
    """Every chunk, of every run, whose frames the window holds."""
    for run in runs:
        while not run.done and window.holds(run.needs()[1]):
            run.accept((yield run.call(window)))


def separate_stream(ensemble: Ensemble, mix: BlockSource, statistics: MixStatistics | None = None,
                    options: RunOptions = DEMUCS, only_stem: str | None = None,
                    run: Callable[[ModelCall], Tensor] = forward) -> Iterator[Region]:
    """The stems of `mix`, region by region, computed here; without `statistics`, a first pass over
    the blocks takes them (the source is read twice)."""
    if statistics is None:
        statistics = measure(mix.blocks())
    regions: deque[Region] = deque()
    steps = stream_steps(ensemble, mix, statistics, regions.append, options, only_stem)
    call = _advance(steps, None)
    while call is not None:
        while regions:
            yield regions.popleft()
        call = _advance(steps, call, run)
    yield from regions


def _advance(steps: StreamSteps, call: ModelCall | None,
             run: Callable[[ModelCall], Tensor] = forward) -> ModelCall | None:
    """Run `call` (none at first) and hand its output on: the next call, or None at the end."""
    with torch.inference_mode():
        try:
            return next(steps) if call is None else steps.send(run(call))
        except StopIteration:
            return None


def run_steps(steps: StreamSteps, run: Callable[[ModelCall], Tensor] = forward) -> None:
    """Every call of `steps` run here, in order (what a scheduler does, interleaved with others)."""
    call = _advance(steps, None, run)
    while call is not None:
        call = _advance(steps, call, run)
