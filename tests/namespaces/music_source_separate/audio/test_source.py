"""Input bytes as a file: a memory map is read in place, the same as bytes through BytesIO."""

from __future__ import annotations

import io
import mmap
from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.encode import FORMATS, encode
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.audio.source import BufferReader, open_bytes


def mapped(data: bytes) -> mmap.mmap:
    view = mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE)
    view[:] = data
    return view


def test_reader_reads_seeks_and_tells_like_bytesio() -> None:
    data = bytes(range(256)) * 10
    ours, theirs = open_bytes(mapped(data)), io.BytesIO(data)
    for offset, whence, size in [(0, io.SEEK_SET, 5), (100, io.SEEK_CUR, 300), (-7, io.SEEK_END, 100),
                                 (5000, io.SEEK_SET, 10), (0, io.SEEK_SET, -1)]:
        assert ours.seek(offset, whence) == theirs.seek(offset, whence)
        assert ours.read(size) == theirs.read(size) and ours.tell() == theirs.tell()
    with pytest.raises(ValueError):
        BufferReader(b"abc").seek(-1)


def test_bytes_are_shared_not_wrapped() -> None:
    assert isinstance(open_bytes(b"abc"), io.BytesIO)


def test_closing_the_reader_releases_the_map() -> None:
    view = mapped(b"x" * 4096)
    reader = open_bytes(view)
    reader.read(10)
    reader.close()
    view.close()  # raises BufferError while a reader still holds the map


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_memory_map_decodes_as_its_bytes_do(fmt: str) -> None:
    samples = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 22050)).astype(np.float32)
    data = encode(samples, 44100, fmt)
    from_bytes, from_map = decode(data, AudioHint(), 600, 2), decode(mapped(data), AudioHint(), 600, 2)
    assert np.array_equal(from_bytes.samples, from_map.samples) and from_bytes.format == from_map.format


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("cut", [False, True])
def test_a_file_map_read_to_its_end_lets_its_pages_go_and_reads_the_same_again(tmp_path: Path, cut: bool) -> None:
    """The map itself, or a view of it from its start (what `framing.whole` gives of an mp3 with tags after
    its frames)."""
    from sami_gateway.jobs.blobs import mapped as map_file

    data = np.random.default_rng(5).integers(0, 256, 96 * 2**20, dtype=np.uint8).tobytes()
    (tmp_path / "input").write_bytes(data)
    view = map_file(tmp_path / "input")
    before = rss_mib()
    reader = open_bytes(memoryview(view)[:len(data) - 128] if cut else view)
    while reader.read(2**20):
        pass
    assert rss_mib() - before < 40  # not the 96 MiB read: at most DROP_BYTES and the last pages
    reader.seek(0)
    assert reader.read() == data[:len(data) - 128 if cut else None]  # the file gives them back


def test_an_anonymous_map_keeps_its_pages_when_read_to_its_end() -> None:
    data = bytes(range(256)) * (40 * 2**20 // 256)
    view = mapped(data)
    reader = open_bytes(view)
    while reader.read(2**20):
        pass
    assert view[:] == data  # dropped pages of an anonymous map would read as zeros
