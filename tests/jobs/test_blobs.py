"""The local blob store: its listing for the orphan sweep, its reads from an offset."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sami_gateway.jobs.blobs import READ_BYTES, BlobStore, LocalBlobStore


async def test_folders_before_a_time_are_those_last_written_before_it(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.open()
    await store.put_bytes("results/old/a.wav", b"x")
    await store.put_bytes("uploads/upl_1", b"song")
    past = time.time() - 100
    os.utime(tmp_path / "blobs" / "uploads" / "upl_1", (past, past))
    await asyncio.sleep(0.3)
    cut = time.time()
    await asyncio.sleep(0.1)
    await store.put_bytes("results/new/a.wav", b"x")
    await store.copy("uploads/upl_1", "inputs/job_new")  # a hard link: the upload's old mtime, a new ctime
    assert await store.folders("results", before=cut) == {"old"}
    assert await store.folders("inputs", before=cut) == set()  # linked after the cut, however old its bytes
    assert await store.folders("results") == {"old", "new"}


async def test_read_from_sends_the_rest_of_a_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.open()
    await check_read_from(store)


async def check_read_from(store: BlobStore) -> None:
    """The bytes from an offset on, in pieces of READ_BYTES: from the start, from within, at the end
    (every back-end's `read_from`)."""
    data = bytes(range(256)) * (READ_BYTES // 256 * 2 + 3)  # two pieces and a bit
    await store.put_bytes("results/job_1/vocals.wav", data)
    for start in (0, 1, READ_BYTES + 5, len(data) - 1, len(data)):
        pieces = [piece async for piece in store.read_from("results/job_1/vocals.wav", start)]
        assert b"".join(pieces) == data[start:]
        assert all(len(piece) <= READ_BYTES for piece in pieces)
    with pytest.raises(FileNotFoundError):
        [piece async for piece in store.read_from("results/job_1/drums.wav", 0)]
