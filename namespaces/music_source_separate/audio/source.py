"""Input bytes as a file for the decoders, without copying them.

`io.BytesIO` shares a `bytes` object but copies any other buffer: for a 100 MB input held in a
memory map that is a 100 MB copy, made while holding the GIL. `open_bytes` gives a reader over
the buffer itself instead. Over a map of a file (one with `pages_on_disk`, as the gateway's
`FileMap`), the pages read are let go as the reader moves on, so that a file read to its end (a
long job's input, read twice) does not stay in the process's RSS.
"""

from __future__ import annotations

import io
import mmap
from typing import BinaryIO

AudioBytes = bytes | bytearray | memoryview | mmap.mmap  # what the decoders take: sliceable like bytes
DROP_BYTES = 16 * 1024 * 1024  # a memory map's pages behind the reader are dropped this much at a time


def file_map(data: AudioBytes) -> mmap.mmap | None:
    """The map of a file whose pages `data` is or begins at, when they may be let go once read (the file
    keeps them): a map that says its pages are on disk (the gateway's `FileMap`), or a view of one from
    its start (`framing.whole` cuts tags off the end so). None for anything else: an anonymous map's
    pages are its only copy."""
    base = data.obj if isinstance(data, memoryview) else data
    return base if isinstance(base, mmap.mmap) and getattr(base, "pages_on_disk", False) else None


class BufferReader(io.RawIOBase):
    """A read-only, seekable file over a buffer; reads copy only what they return."""

    def __init__(self, data: AudioBytes) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0
        self._map = file_map(data)
        self._kept = 0  # where the pages of the map still mapped in begin

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self._view) - self._pos))
        target[:count] = self._view[self._pos:self._pos + count]
        self._pos += count
        if self._map is not None and self._pos - self._kept >= DROP_BYTES:
            self._drop()
        return count

    def _drop(self) -> None:
        """Unmap the pages read (the file keeps them in the page cache: a read again maps them back)."""
        assert self._map is not None
        end = self._pos - self._pos % mmap.PAGESIZE
        if end > self._kept:
            self._map.madvise(mmap.MADV_DONTNEED, self._kept, end - self._kept)
        self._kept = end

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        self._kept = min(self._kept, self._pos - self._pos % mmap.PAGESIZE)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._view.release()  # the buffer (a memory map) may be closed once every reader is
        super().close()


def open_bytes(data: AudioBytes) -> BinaryIO:
    """A file reading `data`: `bytes` shared by BytesIO, any other buffer read in place."""
    if isinstance(data, bytes):
        return io.BytesIO(data)
    return io.BufferedReader(BufferReader(data))  # type: ignore[return-value]
