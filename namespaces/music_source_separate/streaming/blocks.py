"""Audio as a stream of float32 (channels, frames) blocks that can be read again from the start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from ..audio.convert import to_stereo
from ..audio.decode import check_finite, check_length, open_decoder, prepare
from ..audio.sniff import AudioHint
from ..audio.source import AudioBytes, open_bytes

BLOCK_FRAMES = 1 << 16  # frames per block read: 1.5 s at 44.1 kHz, small beside a model segment


class BlockSource(Protocol):
    """A re-readable stream: each `blocks()` call reads the audio again from its first frame."""

    @property
    def rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def frames(self) -> int: ...

    def blocks(self) -> Iterator[np.ndarray]: ...


class ArrayBlocks:
    """An array already in memory, handed out in blocks (views, not copies)."""

    def __init__(self, samples: np.ndarray, rate: int, block_frames: int = BLOCK_FRAMES) -> None:
        self.samples = np.atleast_2d(np.asarray(samples, dtype=np.float32))
        self.rate = rate
        self.block_frames = block_frames

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[-1])

    def blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, self.block_frames):
            yield self.samples[:, start:start + self.block_frames]


class FileBlocks:
    """A wav or flac file (a path, or a buffer such as bytes or a memory map, read in place)
    decoded block by block with soundfile; its length is the header's."""

    def __init__(self, file: Path | str | AudioBytes, block_frames: int = BLOCK_FRAMES) -> None:
        self.file = file
        self.block_frames = block_frames
        with self._open() as handle:
            self.rate, self.channels, self.frames = handle.samplerate, handle.channels, handle.frames

    def _open(self) -> sf.SoundFile:
        return sf.SoundFile(self.file if isinstance(self.file, (Path, str)) else open_bytes(self.file))

    def blocks(self) -> Iterator[np.ndarray]:
        read = 0
        with self._open() as handle:
            for block in handle.blocks(self.block_frames, dtype="float32", always_2d=True):
                read += block.shape[0]
                yield np.ascontiguousarray(block.T)
        if read != self.frames:
            raise ValueError(f"read {read} frames where the header announced {self.frames}")


class DecodedBlocks:
    """Input bytes (mp3, ADTS aac, m4a, ogg; wav and flac too) decoded a packet at a time, as `decode`
    decodes them: the same samples, in blocks of `block_frames`, never the whole song held.

    A first pass at construction counts the frames and refuses what `decode` refuses (an
    AudioError), but for the memory budget, which applies to a whole song held at once: the
    limits are `max_seconds` and `max_channels`. Each `blocks()` decodes again from the start.
    """

    def __init__(self, data: AudioBytes, max_seconds: float, max_channels: int,
                 block_frames: int = BLOCK_FRAMES) -> None:
        self.format, self._data = prepare(data, AudioHint(), max_seconds, max_channels)
        self.max_seconds, self.max_channels, self.block_frames = max_seconds, max_channels, block_frames
        self.rate = self.channels = self.frames = 0
        for chunk in self._chunks():
            check_finite(chunk)
            self.frames += chunk.shape[-1]
        check_length(self.frames, self.rate, self.format)

    def _chunks(self) -> Iterator[np.ndarray]:
        with open_decoder(self._data, self.format, self.max_seconds, self.max_channels, held=False) as decoder:
            self.rate, self.channels = decoder.rate, decoder.channels
            yield from decoder.chunks()

    def blocks(self) -> Iterator[np.ndarray]:
        reader = BlockReader(self._chunks())
        for start in range(0, self.frames, self.block_frames):
            wanted = min(self.block_frames, self.frames - start)
            block = reader.take(wanted)
            if block.shape[-1] < wanted:
                raise ValueError(f"decoded {start + block.shape[-1]} frames where the first pass counted {self.frames}")
            yield block
        if reader.held or any(block.shape[-1] for block in reader.blocks):
            raise ValueError(f"decoded more frames than the {self.frames} the first pass counted")


class MappedBlocks:
    """Another source's blocks as stereo (`to_stereo`) or mono (the mean of every channel), as the
    one-shot conversion gives them: every frame is mapped on its own, so blocks change nothing."""

    def __init__(self, source: BlockSource, channels: int) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.source = source
        self.channels = channels

    @property
    def rate(self) -> int:
        return self.source.rate

    @property
    def frames(self) -> int:
        return self.source.frames

    def blocks(self) -> Iterator[np.ndarray]:
        for block in self.source.blocks():
            yield to_stereo(block) if self.channels == 2 else block.mean(axis=0, keepdims=True)


class IteratorBlocks:
    """Blocks that arrive once (regions of a stem as they are separated): read them a single time,
    into a `Spool` when they are needed again."""

    def __init__(self, blocks: Iterator[np.ndarray], rate: int, channels: int, frames: int) -> None:
        self._blocks: Iterator[np.ndarray] | None = blocks
        self.rate, self.channels, self.frames = rate, channels, frames

    def blocks(self) -> Iterator[np.ndarray]:
        if self._blocks is None:
            raise RuntimeError("these blocks were read already: spool them to read them again")
        blocks, self._blocks = self._blocks, None
        return blocks


class BlockReader:
    """Blocks taken in sizes of the reader's choosing (a region's length) from blocks of any size."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self.blocks = blocks
        self.pending: list[np.ndarray] = []
        self.held = 0

    def take(self, count: int) -> np.ndarray:
        """The next `count` frames; fewer only where the blocks end."""
        while self.held < count and (block := next(self.blocks, None)) is not None:
            self.pending.append(block)
            self.held += block.shape[-1]
        joined = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending, axis=1)
        head, rest = joined[:, :count], joined[:, count:]
        self.pending, self.held = ([rest] if rest.shape[-1] else []), rest.shape[-1]
        return head
