"""Where job inputs, uploads and results are kept: files on local disk, behind a small interface.

A file appears under its key only once it is complete: it is written under `tmp/` and renamed
into place after an fsync, so a crash leaves at most a temporary file, which `open` wipes.
The shared implementation (S3-compatible storage) offers the same verbs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import mmap
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import Code, error
from ..runtime.namespace import FileMap

WRITE_BATCH_BYTES = 1024 * 1024  # received bytes are written to disk this much at a time, off the event loop
READ_BYTES = 1024 * 1024  # a file read in pieces (`read_from`) comes this much at a time
_KEY = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*")
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
FULL_RETRY_AFTER = "30"  # seconds a client waits before trying a write again on a full disk


class BlobTooLarge(Exception):
    """A stream went past its `max_bytes`."""


@dataclass(frozen=True)
class Written:
    """What was stored: size and SHA-256."""

    size: int
    sha256: str


class BlobStore(Protocol):
    """Files by key (laid out by `blob_keys.py`)."""

    async def open(self) -> None:
        """Create the store; forget anything a crash left half-written."""

    def workdir(self) -> Path:
        """A new empty local folder for a job's result files (removed with `discard`)."""

    def discard(self, path: Path) -> None:
        """Remove a folder from `workdir`."""

    async def put_file(self, key: str, source: Path) -> Written:
        """Move a complete local file under `key`."""

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Written:
        """Store a stream under `key`, refused past `max_bytes` (nothing is stored then)."""

    async def put_bytes(self, key: str, data: bytes) -> Written:
        """Store `data` under `key`."""

    async def put_part(self, key: str, data: bytes) -> None:
        """Store a passing copy of `data` under `key`, whole or not at all but neither synced to disk nor
        measured (a part of a stem being written: a crash starts its job again anyway)."""

    async def copy(self, source: str, key: str) -> None:
        """The file under `source` also under `key`."""

    async def move(self, source: str, key: str) -> None:
        """The file under `source` now under `key` (replacing any), and no longer under `source`."""

    async def read(self, key: str) -> bytes | mmap.mmap:
        """The whole file (a memory map for a local one)."""

    def read_from(self, key: str, start: int) -> AsyncIterator[bytes]:
        """The file's bytes from `start` to its end, READ_BYTES at a time (FileNotFoundError if there
        is none), fetching only those."""

    def local_path(self, key: str) -> Path | None:
        """The file's path when it is on local disk and complete, else None."""

    def public_url(self, key: str, ttl: float, filename: str, content_type: str) -> str | None:
        """A URL valid for `ttl` seconds that serves the file straight from storage, without the
        gateway (a presigned URL of S3 storage); None when the gateway serves it itself."""

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every file whose key starts with `prefix` (a key or a folder)."""

    async def folders(self, area: str, before: float | None = None) -> set[str]:
        """The names directly under `area` (`inputs`, `uploads`, `results`), for sweeping orphans;
        with `before` (unix seconds), only those last written before it."""


def mapped(path: Path) -> bytes | mmap.mmap:
    """A local file's bytes as a read-only memory map (b"" for an empty file, which cannot be mapped);
    the map stays valid once the file is closed or removed."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""
        return FileMap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def measure(path: Path) -> Written:
    """A file's size and SHA-256, read a batch at a time (what a store records of a file it keeps)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(WRITE_BATCH_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return Written(size, digest.hexdigest())


@contextlib.contextmanager
def disk_writes(what: str) -> Iterator[None]:
    """A full disk (or quota) while writing `what`: 507 INSUFFICIENT_STORAGE, which the caller can retry."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise error(Code.INSUFFICIENT_STORAGE, f"{what}: the disk is full",
                    {"Retry-After": FULL_RETRY_AFTER}) from exc


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key:
        raise ValueError(f"bad blob key {key!r}")
    return key


class Scratch:
    """Work folders and partial files in a local folder of the store's (`_tmp`)."""

    _tmp: Path

    def workdir(self) -> Path:
        path = self._tmp / f"work-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def _temp(self) -> Path:
        return self._tmp / f"part-{uuid.uuid4().hex}"


class LocalBlobStore(Scratch):
    """`BlobStore` on a local folder: `<root>/blobs/<key>`, temporary files in `<root>/tmp`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)  # half-written files of a crashed run
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._blobs / check_key(key)

    def _commit(self, temp: Path, key: str, sync: bool = True) -> None:
        """`temp` renamed to `key`'s file: whole or not at all; with `sync`, on disk before and after."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if sync:
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, target)
        if sync:
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    async def put_file(self, key: str, source: Path) -> Written:
        def move() -> Written:
            written = measure(source)
            temp = self._temp()
            os.replace(source, temp)  # same filesystem: the work folder is under tmp/
            self._commit(temp, key)
            return written
        with disk_writes(key):
            return await asyncio.to_thread(move)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Written:
        temp = self._temp()
        with disk_writes(key):
            written = await spool(temp, chunks, max_bytes)
            try:
                await asyncio.to_thread(self._commit, temp, key)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        return written

    async def put_bytes(self, key: str, data: bytes) -> Written:
        def write() -> Written:
            temp = self._temp()
            try:
                temp.write_bytes(data)
                self._commit(temp, key)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            return Written(len(data), hashlib.sha256(data).hexdigest())
        with disk_writes(key):
            return await asyncio.to_thread(write)

    async def put_part(self, key: str, data: bytes) -> None:
        def write() -> None:
            temp = self._temp()
            try:
                temp.write_bytes(data)
                self._commit(temp, key, sync=False)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        with disk_writes(key):
            await asyncio.to_thread(write)

    async def copy(self, source: str, key: str) -> None:
        def link() -> None:
            temp = self._temp()
            try:
                try:
                    os.link(self._path(source), temp)  # uploads and inputs are never modified: share the bytes
                except OSError:
                    shutil.copyfile(self._path(source), temp)
                self._commit(temp, key)
            except BaseException:
                temp.unlink(missing_ok=True)  # a partial copy on a full disk would keep it full
                raise
        with disk_writes(key):
            await asyncio.to_thread(link)

    async def move(self, source: str, key: str) -> None:
        await asyncio.to_thread(self._commit, self._path(source), key)  # a rename, fsynced like any commit

    async def read(self, key: str) -> bytes | mmap.mmap:
        return await asyncio.to_thread(mapped, self._path(key))

    async def read_from(self, key: str, start: int) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, self._path(key), "rb")
        try:
            handle.seek(start)
            while chunk := await asyncio.to_thread(handle.read, READ_BYTES):
                yield chunk
        finally:
            handle.close()

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def public_url(self, key: str, ttl: float, filename: str, content_type: str) -> str | None:
        return None  # served by the gateway, with its own signed URLs

    async def delete_prefix(self, prefix: str) -> None:
        def delete() -> None:
            path = self._path(prefix)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        await asyncio.to_thread(delete)

    async def folders(self, area: str, before: float | None = None) -> set[str]:
        def written(entry: Path) -> float:  # a hard link keeps its source's mtime; the link itself sets ctime
            stat = entry.stat()
            return max(stat.st_mtime, stat.st_ctime)

        def names() -> set[str]:
            path = self._path(area)
            entries = list(path.iterdir()) if path.is_dir() else []
            return {entry.name for entry in entries if before is None or written(entry) < before}
        return await asyncio.to_thread(names)


async def spool(temp: Path, chunks: AsyncIterator[bytes], max_bytes: int) -> Written:
    """Write a stream to the local file `temp` a batch at a time off the event loop, hashing it;
    BlobTooLarge past `max_bytes`. On any failure the partial file is removed."""
    digest = hashlib.sha256()
    size = 0
    pending: list[bytes] = []
    handle = await asyncio.to_thread(open, temp, "wb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise BlobTooLarge(f"more than {max_bytes} bytes")
            pending.append(chunk)
            if sum(map(len, pending)) >= WRITE_BATCH_BYTES:
                batch, pending = b"".join(pending), []
                await asyncio.to_thread(_write, handle, digest, batch)
        await asyncio.to_thread(_write, handle, digest, b"".join(pending))
        await asyncio.to_thread(handle.close)
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise
    return Written(size, digest.hexdigest())


def _write(handle: object, digest: hashlib._Hash, data: bytes) -> None:
    digest.update(data)
    handle.write(data)  # type: ignore[attr-defined]
