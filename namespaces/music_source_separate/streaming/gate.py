"""The denoiser (`denoise.py`) over a stem read as blocks: a first pass takes each channel's noise
profile from the frames the one-shot gate samples, a second gates the stem chunk by chunk.

Every frame goes through the one-shot gate's own functions with the same neighbours, so the result
is the same to the bit. The profile needs the whole stem, so nothing comes out before the stem has
been read once: a stem being separated is spooled first (`Spool`). Memory: the profile's frames
(at most `max_profile_frames` x `n_fft` floats a channel, 32 MiB at the defaults), the hum
segments (8 MiB at 44.1 kHz) and one chunk of `_CHUNK_FRAMES` frames with its spectra.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window

from ..engine import denoise as one_shot
from ..engine.denoise import DenoiseSettings
from .blocks import BlockSource

DEFAULTS = DenoiseSettings()


@dataclass(frozen=True)
class Framing:
    """Where the one-shot gate's frames lie for a signal of `frames` samples (see `denoise._pad`)."""

    frames: int
    n_fft: int
    hop: int

    @property
    def pad_left(self) -> int:
        return self.n_fft - self.hop

    @property
    def count(self) -> int:
        return (self.pad_left + self.frames - 1) // self.hop + 1

    @property
    def pad_right(self) -> int:
        return (self.count - 1) * self.hop + self.n_fft - self.pad_left - self.frames


class Rolling:
    """Samples [start, end) of a (channels, n) stream, appended at the end and dropped at the start."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int) -> None:
        self.blocks = blocks
        self.data = np.zeros((channels, 0), np.float32)
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + self.data.shape[-1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop), reading on as far as needed."""
        while self.end < stop:
            self.data = np.concatenate([self.data, next(self.blocks)], axis=1)
        return self.data[:, start - self.start:stop - self.start]

    def drop_before(self, position: int) -> None:
        cut = min(max(0, position - self.start), self.data.shape[-1])
        self.data, self.start = self.data[:, cut:], self.start + cut


def reflect_padded(blocks: Iterator[np.ndarray], framing: Framing) -> Iterator[np.ndarray]:
    """The blocks of a signal reflect-padded as `np.pad(x, (pad_left, pad_right), mode="reflect")`."""
    head = np.zeros((0, 0), np.float32)
    tail_size = framing.pad_right + 1
    tail: np.ndarray | None = None
    for block in blocks:
        if head.shape[-1] <= framing.pad_left:  # the left reflection needs x[1 : pad_left + 1] first
            head = block if head.size == 0 else np.concatenate([head, block], axis=1)
            if head.shape[-1] <= framing.pad_left:
                continue
            block = head
            yield head[:, framing.pad_left:0:-1]
        tail = block[:, -tail_size:] if tail is None or block.shape[-1] >= tail_size else \
            np.concatenate([tail, block], axis=1)[:, -tail_size:]
        yield block
    assert tail is not None and tail.shape[-1] == tail_size, "a signal shorter than n_fft is not gated"
    yield tail[:, -2::-1][:, :framing.pad_right]


class DenoisedBlocks:
    """`source` with stationary noise gated, per channel, as `denoise.denoise` gates it; `source` is
    read twice (a stem being separated: spool it first)."""

    def __init__(self, source: BlockSource, settings: DenoiseSettings = DEFAULTS) -> None:
        self.source = source
        self.settings = settings
        self.rate, self.channels, self.frames = source.rate, source.channels, source.frames
        self.framing = Framing(source.frames, settings.n_fft, settings.hop)
        self.window = get_window("hann", settings.n_fft).astype(np.float32)

    def blocks(self) -> Iterator[np.ndarray]:
        if self.frames < self.settings.n_fft:  # too short to gate: unchanged, as the one-shot gate
            yield from self.source.blocks()
            return
        thresholds = self.thresholds()
        yield from self._gated(thresholds)

    def thresholds(self) -> list[np.ndarray | None]:
        """The first pass: each channel's gate threshold per bin (None: silent, left unchanged)."""
        framing, settings = self.framing, self.settings
        stride = max(1, math.ceil(framing.count / settings.max_profile_frames))
        wanted = range(0, framing.count, stride)
        frames = np.empty((self.channels, len(wanted), settings.n_fft), np.float32)
        length, starts = one_shot.hum_segment_starts(self.frames, self.rate)
        if not settings.remove_hum:
            starts = starts[:0]
        segments = np.empty((self.channels, starts.size, length), np.float32)
        stream = Rolling(reflect_padded(iter(self.source.blocks()), framing), self.channels)
        segment = 0  # the next hum segment to copy
        for index, frame in enumerate(wanted):
            begin = frame * settings.hop
            frames[:, index] = stream.read(begin, begin + settings.n_fft)
            segment = self._copy_segments(stream, starts, length, segment, segments, begin + settings.n_fft)
            stream.drop_before(min(begin + stride * settings.hop, framing.pad_left + _at(starts, segment)))
        self._copy_segments(stream, starts, length, segment, segments, None)
        return [self._threshold(frames[channel], segments[channel]) for channel in range(self.channels)]

    def _copy_segments(self, stream: Rolling, starts: np.ndarray, length: int, segment: int,
                       segments: np.ndarray, before: int | None) -> int:
        """Copy the hum segments that end by padded position `before` (all, with None)."""
        pad = self.framing.pad_left
        while segment < starts.size and (before is None or pad + starts[segment] + length <= before):
            first = pad + int(starts[segment])
            segments[:, segment] = stream.read(first, first + length)
            segment += 1
        return segment

    def _threshold(self, frames: np.ndarray, segments: np.ndarray) -> np.ndarray | None:
        raw_floor = one_shot._percentile_floor(frames, self.window, self.settings)
        if raw_floor is None:
            return None
        if self.settings.remove_hum:
            hum = one_shot.hum_bins_of(segments, self.rate, self.settings)
        else:
            hum = np.zeros(raw_floor.shape, bool)
        return one_shot._threshold_db(raw_floor, hum, self.settings)

    def _gated(self, thresholds: list[np.ndarray | None]) -> Iterator[np.ndarray]:
        """The second pass: chunks of frames gated with their neighbours, overlap-added, normalised."""
        framing, settings, hop = self.framing, self.settings, self.settings.hop
        margin = 2 * settings.smooth_time_frames
        per_frame = settings.n_fft // hop
        squared = (self.window.astype(np.float64) ** 2).reshape(-1, hop).sum(axis=0).astype(np.float32)
        stream = Rolling(reflect_padded(iter(self.source.blocks()), framing), self.channels)
        padded_length = framing.pad_left + self.frames + framing.pad_right
        accumulated = np.zeros((self.channels, 0), np.float32)
        origin = 0  # the padded position of accumulated[:, 0]
        emitted = framing.pad_left  # the padded position of the next sample to hand on
        for first in range(0, framing.count, one_shot._CHUNK_FRAMES):
            count = min(one_shot._CHUNK_FRAMES, framing.count - first)
            low, high = max(0, first - margin), min(framing.count, first + count + margin)
            local = stream.read(low * hop, (high - 1) * hop + settings.n_fft)
            reach = (first + count + per_frame - 1) * hop - origin
            if reach > accumulated.shape[-1]:
                grow = np.zeros((self.channels, reach - accumulated.shape[-1]), np.float32)
                accumulated = np.concatenate([accumulated, grow], axis=1)
            for channel, threshold in enumerate(thresholds):
                if threshold is None:
                    continue
                frames = sliding_window_view(local[channel], settings.n_fft)[::hop]
                gated = one_shot._gate_chunk(frames, first - low, count, self.window, threshold, settings)
                one_shot._overlap_add(accumulated[channel], gated * self.window, first - origin // hop, hop)
            final = (first + count) * hop if first + count < framing.count else padded_length
            stop = min(final, framing.pad_left + self.frames)
            if stop > emitted:
                yield self._finish(accumulated[:, emitted - origin:stop - origin], stream, emitted, stop,
                                   thresholds, squared)
                emitted = stop
            accumulated, origin = accumulated[:, final - origin:].copy(), final
            stream.drop_before(min((first + count - margin) * hop, emitted))

    def _finish(self, region: np.ndarray, stream: Rolling, start: int, stop: int,
                thresholds: list[np.ndarray | None], squared: np.ndarray) -> np.ndarray:
        """Padded samples [start, stop) divided by the window's squared sum; ungated channels as read."""
        out = region.copy()
        phase = (np.arange(start, stop) - self.framing.pad_left) % self.settings.hop
        out /= squared[phase]
        for channel, threshold in enumerate(thresholds):
            if threshold is None:
                out[channel] = stream.read(start, stop)[channel]
        return out


def _at(starts: np.ndarray, index: int) -> int:
    """The start of hum segment `index`, or past every frame when there is none left."""
    return int(starts[index]) if index < starts.size else np.iinfo(np.int64).max
