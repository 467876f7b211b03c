"""One network over the mix by Demucs's overlapping segments, for one shift: which frames each
segment reads, the overlap-add of its estimate, and the regions that no later segment touches."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..engine.inference import ModelCall, RunOptions, center_trim, plan_chunks, segment_samples, transition_weight
from .window import MixWindow


def input_length(model: nn.Module, options: RunOptions, length: int, segment: int) -> int:
    """The length of the model's input for a chunk of `length` frames, as `demucs.apply` pads it."""
    if type(model).__name__ == "HTDemucs" and options.segment is not None:
        return segment
    valid = getattr(model, "valid_length", None)
    return int(valid(length)) if valid is not None else length


class SegmentRun:
    """The segments of one network over the span [start, total) of the mix (start <= 0: a shift
    moves the chunk grid earlier by up to half a second), and what they estimate.

    The estimate is overlap-added only over the frames that a segment still to run may touch:
    frames before the next segment's offset are final, divided by their weight and queued as
    `ready`, from mix frame `ready_start` on (frames before 0 are dropped)."""

    def __init__(self, model: nn.Module, options: RunOptions, start: int, total: int) -> None:
        self.model = model
        self.options = options
        self.start = start
        self.segment = segment_samples(model, options.segment)
        self.chunks = plan_chunks(total - start, self.segment, options.overlap)
        self.next = 0  # the index of the next chunk to run
        self.weight = transition_weight(self.segment)
        self.final = 0  # span frames before this are final
        self.sum: Tensor | None = None  # the weighted estimates of span frames [final, final + n)
        self.weights = torch.zeros(0)  # and their summed weights
        self.ready: list[Tensor] = []  # (1, sources, channels, n) final estimates, in order
        self.ready_start = self.ready_end = 0  # the mix frames `ready` holds

    @property
    def done(self) -> bool:
        return self.next == len(self.chunks)

    def needs(self) -> tuple[int, int]:
        """The mix frames [first, stop) the next chunk reads."""
        chunk = self.chunks[self.next]
        target = input_length(self.model, self.options, chunk.length, self.segment)
        first = self.start + chunk.offset - (target - chunk.length) // 2
        return first, first + target

    def call(self, window: MixWindow) -> ModelCall:
        """The model call of the next chunk (its frames must be in `window`)."""
        return ModelCall(self.model, window.read(*self.needs()), self.options.precision)

    def accept(self, estimate: Tensor) -> None:
        """Add the next chunk's estimate, and queue the frames it made final."""
        chunk = self.chunks[self.next]
        self.next += 1
        weight = self.weight[:chunk.length].to(estimate.device)
        end = chunk.offset + chunk.length - self.final
        if self.sum is None:
            self.sum, self.weights = estimate.new_zeros(*estimate.shape[:3], 0), estimate.new_zeros(0)
        if end > self.sum.shape[-1]:  # zeros for the frames this chunk is the first to reach
            grow = end - self.sum.shape[-1]
            self.sum = torch.cat([self.sum, estimate.new_zeros(*estimate.shape[:3], grow)], dim=-1)
            self.weights = torch.cat([self.weights, estimate.new_zeros(grow)])
        span = slice(chunk.offset - self.final, end)
        self.sum[..., span] += weight * center_trim(estimate, chunk.length)
        self.weights[span] += weight
        final = self.chunks[self.next].offset if not self.done else self.final + end
        self._finish(final - self.final)

    def _finish(self, count: int) -> None:
        """Frames [final, final + count) of the span divided by their weight and queued."""
        if count <= 0:
            return
        assert self.sum is not None and self.weights[:count].min() > 0, "every sample must be covered"
        region = self.sum[..., :count] / self.weights[:count]
        self.sum, self.weights = self.sum[..., count:], self.weights[count:]
        first = self.start + self.final  # the region's first mix frame
        self.final += count
        if first < 0:
            region = region[..., -first:]
            first = 0
        if region.shape[-1]:
            if not self.ready:
                self.ready_start = first
            self.ready.append(region)
            self.ready_end = first + region.shape[-1]

    def take(self, count: int) -> Tensor:
        """The next `count` final frames (count <= ready_end - ready_start)."""
        pieces: list[Tensor] = []
        need = count
        while need:
            head = self.ready[0]
            if head.shape[-1] <= need:
                pieces.append(self.ready.pop(0))
                need -= head.shape[-1]
            else:
                pieces.append(head[..., :need])
                self.ready[0] = head[..., need:]
                need = 0
        self.ready_start += count
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
