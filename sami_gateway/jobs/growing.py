"""Results readable while their job runs.

A run tells its runner which result files it is writing (`JobCall.growing`); `GrowingFiles` publishes
each one's bytes to the blob store in parts of exactly PART_BYTES (`blob_keys.part_key`), the part at
a file's end only once the job has finished, when the finished file takes over. So any front of any
role reads the same parts (local disk or S3 alike), and a run that starts again (storage trouble)
writes the same parts under the same keys. `follow` reads a stem as it grows: part after part while
the job is `processing`, then the rest of the finished file from where the parts ended. A run cut
short and taken over is another attempt, under its own keys: a reader of the old one is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path

from ..errors import GatewayError
from ..runtime.namespace import release
from .blob_keys import part_key, parts_prefix
from .blobs import BlobStore
from .model import Job, JobStatus

log = logging.getLogger(__name__)

PART_BYTES = 1024 * 1024  # a stem is published this much at a time
PUBLISH_SECONDS = 0.5  # how often the files being written are looked at


class StemCutOff(Exception):
    """The stem being followed will not be finished as it began: its job failed, was cancelled or
    deleted, or its run was taken over by another."""


class GrowingFiles:
    """The files one run of a job is writing: `add` (from any thread) names one; between `start` and
    `stop` each new whole PART_BYTES of them is copied into the blob store."""

    def __init__(self, blobs: BlobStore, job_id: str, attempt: int) -> None:
        self._blobs = blobs
        self._job_id = job_id
        self._attempt = attempt
        self._lock = threading.Lock()
        self._files: dict[str, Path] = {}
        self._published: dict[str, int] = {}  # parts published, by stem
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.any = False  # whether a part was published (so there are parts to delete)

    def add(self, stem: str, path: Path) -> None:
        """`path` holds `stem` as it is written, from its first byte: bytes written are never rewritten."""
        with self._lock:
            self._files.setdefault(stem, path)

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish())

    async def stop(self) -> None:
        """Stop publishing, once a part being written is (none is written after)."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _publish(self) -> None:
        """Storage that fails, or any other fault, ends the publishing: the job goes on, and readers get
        the stem once it is finished."""
        try:
            while not self._stopping.is_set():
                await self._publish_new()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), PUBLISH_SECONDS)
        except (GatewayError, OSError) as exc:
            log.warning("job %s: its stems are no longer published as they are written: %s", self._job_id, exc)
        except Exception:  # noqa: BLE001 - a fault here ends the publishing, never the job
            log.exception("job %s: its stems are no longer published as they are written", self._job_id)

    async def _publish_new(self) -> None:
        with self._lock:
            files = list(self._files.items())
        for stem, path in files:
            index = self._published.get(stem, 0)
            while not self._stopping.is_set():
                part = await asyncio.to_thread(_whole_part, path, index)
                if part is None:
                    break
                await self._blobs.put_part(part_key(self._job_id, self._attempt, stem, index), part)
                index += 1
                self._published[stem] = index
                self.any = True


def _whole_part(path: Path, index: int) -> bytes | None:
    """The `index`th PART_BYTES of the file once all of them are written, else None."""
    try:
        with open(path, "rb") as handle:
            handle.seek(index * PART_BYTES)
            part = handle.read(PART_BYTES)
    except FileNotFoundError:  # not opened yet
        return None
    return part if len(part) == PART_BYTES else None


async def delete_parts(blobs: BlobStore, job_id: str) -> None:
    """Once the job has ended: its readers go on from the finished file, or are cut off."""
    try:
        await blobs.delete_prefix(parts_prefix(job_id))
    except (GatewayError, OSError) as exc:  # left for the job's expiry, which deletes its results folder
        log.warning("job %s: the parts of its stems were not deleted: %s", job_id, exc)


async def follow(blobs: BlobStore, job: Job, stem: str, current: Callable[[], Awaitable[Job | None]],
                 changed: Callable[[float], Awaitable[object]]) -> AsyncGenerator[bytes, None]:
    """The bytes of `stem` of a `processing` job, as they are written and to the end of the finished file.
    `current()` reads the job again; `changed(timeout)` waits for it to change, at most `timeout` seconds.
    Raises StemCutOff (possibly after some bytes) when the stem will not be finished as it began."""
    index = 0
    while True:
        try:
            part = await blobs.read(part_key(job.id, job.attempts, stem, index))
        except FileNotFoundError:
            now = await current()
            if now is None or now.attempts != job.attempts or (now.status.terminal
                                                               and now.status is not JobStatus.SUCCEEDED):
                raise StemCutOff(f"the job is {now.status.value if now else 'deleted'}") from None
            if now.status is JobStatus.SUCCEEDED:
                async for chunk in _finished_from(blobs, now, stem, index * PART_BYTES):
                    yield chunk
                return
            await changed(PUBLISH_SECONDS)
            continue
        try:
            yield bytes(part)
        finally:
            release(part)
        index += 1


async def _finished_from(blobs: BlobStore, job: Job, stem: str, offset: int) -> AsyncIterator[bytes]:
    item = job.result.get(stem) if job.result else None
    if item is None or item.key is None:
        raise StemCutOff(f"the job kept no file of {stem}")
    async for chunk in blobs.read_from(item.key, offset):
        yield chunk
