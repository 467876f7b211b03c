"""Audio decoded once: its blocks written to a float32 file on disk while its statistics are taken,
then read back as often as needed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from .blocks import BLOCK_FRAMES, BlockSource
from .statistics import MixStatistics, RunningStatistics


class SpoolWriter:
    """Blocks written one by one to an unnamed temporary file in `directory` (frames interleaved,
    float32); `done` hands them back as a `Spool`."""

    def __init__(self, rate: int, channels: int, directory: Path | str | None = None) -> None:
        self.rate, self.channels = rate, channels
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self.running = RunningStatistics()
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        self.running.add(block)
        self.file.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
        self.frames += block.shape[-1]

    def done(self, block_frames: int = BLOCK_FRAMES) -> Spool:
        self.file.flush()
        spool = Spool.__new__(Spool)
        spool._adopt(self, block_frames)
        return spool

    def close(self) -> None:
        self.file.close()


class Spool:
    """`source` written to disk with its statistics; closing it (or leaving its `with`) frees the space."""

    def __init__(self, source: BlockSource, directory: Path | str | None = None,
                 block_frames: int = BLOCK_FRAMES) -> None:
        writer = SpoolWriter(source.rate, source.channels, directory)
        try:
            for block in source.blocks():
                writer.write(block)
        except BaseException:
            writer.close()
            raise
        self._adopt(writer, block_frames)
        self._file.flush()

    def _adopt(self, writer: SpoolWriter, block_frames: int) -> None:
        self.rate, self.channels, self.frames = writer.rate, writer.channels, writer.frames
        self.block_frames = block_frames
        self._file = writer.file
        self.statistics: MixStatistics = writer.running.result()

    def blocks(self) -> Iterator[np.ndarray]:
        """Every block from the first; several readers may read at once (each at its own offset)."""
        frame_bytes = 4 * self.channels
        offset = 0
        while data := os.pread(self._file.fileno(), self.block_frames * frame_bytes, offset):
            offset += len(data)
            yield np.frombuffer(data, np.float32).reshape(-1, self.channels).T.copy()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
