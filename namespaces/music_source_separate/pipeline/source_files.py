"""A stem cache entry's `.npy` files, one per source, written and read region by region in fixed memory.

Each file's header is written first with the array's final shape (channels, frames), as `np.save` writes
it, so the finished file is the one `np.save` would make; its frames are then written and read with
explicit calls at their offsets, never through a memory map, whose touched pages count in the process's
memory (an entry of a 2-hour song is gigabytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

REGION_FRAMES = 1 << 16  # frames per region read back: ~1 MiB for four float16 stereo sources


def _header(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """Where the data of the `.npy` file at `path` starts, its shape and dtype (C order only)."""
    with open(path, "rb") as handle:
        version = npy.read_magic(handle)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        if fortran or len(shape) != 2:
            raise ValueError(f"{path.name}: not a (channels, frames) array in C order")
        return handle.tell(), shape, dtype


class SourceFiles:
    """Each source's (channels, frames) array of one dtype in its `<name>.npy`, open for region writes
    (`create`) or reads (`open`); region stems are (sources, channels, frames) in `names`' order."""

    def __init__(self, names: Sequence[str], fds: list[int], offsets: list[int], dtype: np.dtype,
                 shape: tuple[int, int]) -> None:
        self.names = tuple(names)
        self.dtype = dtype
        self.channels, self.frames = shape
        self._fds, self._offsets = fds, offsets
        self.written = 0  # frames written so far, in order from the first

    @classmethod
    def create(cls, folder: Path, names: Sequence[str], dtype: type[np.floating], channels: int,
               frames: int) -> SourceFiles:
        """New files in `folder`, each as long as it will be (a sparse hole until its frames come)."""
        kind = np.dtype(dtype)
        header = {"descr": npy.dtype_to_descr(kind), "fortran_order": False, "shape": (channels, frames)}
        files = cls(names, [], [], kind, (channels, frames))
        try:
            for name in names:
                files._fds.append(os.open(folder / f"{name}.npy", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644))
                with os.fdopen(os.dup(files._fds[-1]), "wb") as handle:
                    npy.write_array_header_1_0(handle, header)
                    files._offsets.append(handle.tell())
                os.ftruncate(files._fds[-1], files._offsets[-1] + channels * frames * kind.itemsize)
        except BaseException:
            files.close()
            raise
        return files

    @classmethod
    def open(cls, folder: Path, names: Sequence[str]) -> SourceFiles:
        """The files of `names` in `folder`, of one shape and dtype, open for reading (they stay readable
        if the entry is deleted meanwhile)."""
        found = [_header(folder / f"{name}.npy") for name in names]
        if not found or any((shape, dtype) != found[0][1:] for _, shape, dtype in found):
            raise ValueError("the sources differ in shape or dtype")
        _, shape, dtype = found[0]
        files = cls(names, [], [offset for offset, _, _ in found], dtype, (shape[0], shape[1]))
        try:
            for name in names:
                files._fds.append(os.open(folder / f"{name}.npy", os.O_RDONLY))
        except BaseException:
            files.close()
            raise
        files.written = files.frames
        return files

    def _at(self, index: int, channel: int, frame: int) -> int:
        return self._offsets[index] + (channel * self.frames + frame) * self.dtype.itemsize

    def write(self, start: int, stems: np.ndarray) -> None:
        """The frames from `start` of every source (sources, channels, n), rounded to the files' dtype;
        regions come in order, without gaps."""
        if start != self.written or start + stems.shape[-1] > self.frames:
            raise ValueError(f"a region at {start} after {self.written} of {self.frames} frames")
        for index in range(len(self.names)):
            for channel in range(self.channels):
                data = np.ascontiguousarray(stems[index, channel], dtype=self.dtype).data.cast("B")
                at = self._at(index, channel, start)
                while data:
                    done = os.pwrite(self._fds[index], data, at)
                    data, at = data[done:], at + done
        self.written = start + stems.shape[-1]

    def read(self, start: int, count: int) -> np.ndarray:
        """The frames `start` to `start + count` of every source, (sources, channels, count)."""
        count = max(0, min(count, self.frames - start))
        out = np.empty((len(self.names), self.channels, count), self.dtype)
        for index in range(len(self.names)):
            for channel in range(self.channels):
                view = out[index, channel].data.cast("B")
                at = self._at(index, channel, start)
                while view:
                    done = os.preadv(self._fds[index], [view], at)
                    if done == 0:
                        raise ValueError(f"{self.names[index]}.npy ends before frame {start + count}")
                    view, at = view[done:], at + done
        return out

    def regions(self, frames: int = REGION_FRAMES) -> Iterator[tuple[int, np.ndarray]]:
        """Every region of `frames` frames (the last shorter), with its start, from the first."""
        for start in range(0, self.frames, frames):
            yield start, self.read(start, frames)

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
