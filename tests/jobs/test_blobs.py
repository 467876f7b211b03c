"""The local blob store's listing for the orphan sweep."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sami_gateway.jobs.blobs import LocalBlobStore


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
