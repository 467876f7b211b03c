"""A source decoded once: its blocks written to a float32 file on disk while its statistics are taken,
then read back as often as needed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from .blocks import BLOCK_FRAMES, BlockSource
from .statistics import MixStatistics, RunningStatistics


class Spool:
    """`source` written to an unnamed temporary file in `directory` (frames interleaved, float32),
    with its statistics; closing it (or leaving its `with`) frees the disk space."""

    def __init__(self, source: BlockSource, directory: Path | str | None = None,
                 block_frames: int = BLOCK_FRAMES) -> None:
        self.rate, self.channels = source.rate, source.channels
        self.block_frames = block_frames
        self._file = tempfile.TemporaryFile(dir=directory)
        running = RunningStatistics()
        written = 0
        try:
            for block in source.blocks():
                running.add(block)
                self._file.write(np.ascontiguousarray(block.T, dtype=np.float32).tobytes())
                written += block.shape[-1]
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self.frames = written
        self.statistics: MixStatistics = running.result()

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
