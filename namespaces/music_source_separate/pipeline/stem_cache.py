"""Separated stems kept on disk, bounded by bytes, least recently used evicted first.

An entry is a directory named by its key, holding `meta.json` (format, sample rate, sources) and
one `<source>.npy` per source, which readers memory-map (`get`) or read region by region (`open`). It
is written whole (`put`) or region by region (`begin`, a streamed job's) under a temporary name and
renamed into place, so a reader sees a whole entry or none; temporary and half-deleted entries
left by a crash, and entries of an older format, are removed when the cache opens. The index is
rebuilt from the directories on open, their modification times giving the order of last use (a
hit touches its entry).

The key carries a scope (the appkey, unless the cache is shared), so one appkey never learns of
another's input. The jobs that made or used an entry are its holders, one empty file each under
`holders/`: when the last of them is forgotten (the job deleted or expired), the entry goes with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from sami_gateway.runtime.namespace import InputBytes

from ..audio.source import file_map
from .source_files import SourceFiles

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # part of every key and meta.json: entries of another format are removed on open
META = "meta.json"
HOLDERS = "holders"  # an entry's folder of its holding jobs, one empty file each
TEMPORARY = (".tmp-", ".trash-")  # prefixes of entries being written or deleted
# Jobs forgotten lately, whose run may still be finishing on a thread: what it keeps then is refused.
FORGOTTEN_KEPT = 4096
T = TypeVar("T")
HASH_CHUNK = 8 << 20  # bytes of an input hashed at once (a multiple of the page size)


@dataclass(frozen=True)
class CachedStems:
    """A cache entry: each source (channels, frames), memory-mapped read-only, at `samplerate`."""

    sources: Mapping[str, np.ndarray]
    samplerate: int


@dataclass(frozen=True)
class CacheUse:
    """Who looks entries up: the scope of their keys (an appkey; "" when the cache is shared across
    appkeys) and the holder that keeps what it uses (a job's `holder_name`; None for invoke)."""

    scope: str
    holder: str | None = None


@dataclass(frozen=True)
class OpenEntry:
    """A cache entry open for region reads: its sources' files, at `samplerate`; `files.close()` ends it."""

    files: SourceFiles
    samplerate: int


class Draft:
    """An entry being written region by region under a temporary name: `commit` keeps it once every frame
    is written; `discard` (or a commit refused) removes it. Its writes may come from another thread than
    its end: a write after the end is dropped."""

    def __init__(self, cache: StemCache, key: str, staging: Path, files: SourceFiles, samplerate: int,
                 holder: str | None) -> None:
        self.cache, self.key, self.staging, self.files = cache, key, staging, files
        self.samplerate, self.holder = samplerate, holder
        self._lock = threading.Lock()
        self._ended = False

    def write(self, start: int, stems: np.ndarray) -> None:
        """The sources' frames from `start` (sources, channels, n), in order, rounded to the entry's dtype."""
        with self._lock:
            if not self._ended:
                self.files.write(start, stems)

    def commit(self) -> bool:
        """Whether the entry is kept now (False: incomplete or refused, and removed)."""
        if not self._end() or self.files.written != self.files.frames:
            _remove(self.staging)
            return False
        return self.cache._commit(self.key, self.staging, list(self.files.names), self.samplerate, self.holder)

    def discard(self) -> None:
        self._end()
        _remove(self.staging)

    def _end(self) -> bool:
        """Whether this call ended the draft (its files closed)."""
        with self._lock:
            ended, self._ended = self._ended, True
            self.files.close()
        return not ended


def cache_key(input_sha256: str, model: str, precision: str, scope: str) -> str:
    """The entry name for an input (its sha256), a model's identity, the inference precision and the
    scope the entry is kept for (an appkey; "" for a cache shared across appkeys)."""
    text = "\0".join((f"v{FORMAT_VERSION}", input_sha256, model, precision, scope))
    return hashlib.sha256(text.encode()).hexdigest()


def input_sha256(data: InputBytes) -> str:
    """The sha256 of an input, read in chunks; over a map of a file, each chunk's pages are let go once
    hashed (the file holds them), so a 2 GiB upload is hashed in `HASH_CHUNK` of memory."""
    digest = hashlib.sha256()
    view = memoryview(data)
    pages = file_map(data)
    try:
        for start in range(0, len(view), HASH_CHUNK):
            digest.update(view[start:start + HASH_CHUNK])
            if pages is not None:
                pages.madvise(mmap.MADV_DONTNEED, start, min(HASH_CHUNK, len(view) - start))
    finally:
        view.release()
    return digest.hexdigest()


def holder_name(appkey: str, job_id: str) -> str:
    """The file name that marks a job (of an appkey) as holding an entry."""
    return hashlib.sha256(f"{appkey}\0{job_id}".encode()).hexdigest()[:40]


def _size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _format(path: Path) -> int | None:
    """The format an entry was written in (None: unreadable)."""
    try:
        meta = json.loads((path / META).read_text())
        return int(meta["format"]) if isinstance(meta, dict) and "format" in meta else None
    except (OSError, ValueError, TypeError):
        return None


def _holder_files(path: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(path / HOLDERS) if entry.is_file()]
    except OSError:
        return []


class StemCache:
    """Entries under `root`, their total size at most `max_bytes` (0: the cache keeps nothing)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recently used first
        self._holders: dict[str, set[str]] = {}  # key -> the holders of that entry
        self._held: dict[str, set[str]] = {}  # holder -> the keys it holds
        self._forgotten: OrderedDict[str, None] = OrderedDict()  # the last FORGOTTEN_KEPT holders forgotten
        self._bytes = 0
        self._last_use = 0  # ns: the newest use stamped on an entry's directory
        self._lock = threading.Lock()
        if max_bytes > 0:
            self._open()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def holders(self, key: str) -> frozenset[str]:
        """The holders of entry `key` (empty if it has none or is absent)."""
        with self._lock:
            return frozenset(self._holders.get(key, ()))

    def _open(self) -> None:
        """Index the entries left by earlier runs (oldest use first), removing unfinished ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for entry in os.scandir(self.root):
            path = Path(entry.path)
            if entry.name.startswith(TEMPORARY):
                _remove(path)
            elif entry.is_dir() and (path / META).is_file():
                if _format(path) != FORMAT_VERSION:
                    _remove(path)  # unreachable by any key now (an older one was not scoped by appkey)
                    continue
                found.append((entry.stat().st_mtime_ns, entry.name, _size(path)))
        for used, key, size in sorted(found):
            self._entries[key] = size
            self._bytes += size
            self._last_use = max(self._last_use, used)
            for holder in _holder_files(self.root / key):
                self._note(key, holder)
        self._evict(0)
        log.info("stem cache %s: %d entries, %d bytes", self.root, len(self._entries), self._bytes)

    def get(self, key: str, holder: str | None = None) -> CachedStems | None:
        """The entry `key`, memory-mapped, marked as just used (and as held by `holder`); None if absent
        (or unreadable, which removes it)."""
        found = self._use(key, holder, lambda path, names: {
            name: np.load(path / f"{name}.npy", mmap_mode="r") for name in names})
        return None if found is None else CachedStems(*found)

    def put(self, key: str, sources: Mapping[str, np.ndarray], samplerate: int, holder: str | None = None) -> bool:
        """Keep `sources` (name -> (channels, frames)) under `key`, held by `holder`, evicting the least
        recently used entries to make room; False if the entry alone exceeds the bound, its holder was
        forgotten, or the key is already kept (then `holder` holds that entry too)."""
        size = sum(array.nbytes for array in sources.values())
        if not self.enabled or size > self.max_bytes or self._refused(key, holder):
            return False
        staging = self._staging(key)
        try:
            staging.mkdir(parents=True)
            for name, array in sources.items():
                np.save(staging / f"{name}.npy", np.ascontiguousarray(array))
        except OSError as exc:
            log.warning("stem cache entry %s not written: %s", key, exc)
            _remove(staging)
            return False
        return self._commit(key, staging, list(sources), samplerate, holder)

    def begin(self, key: str, sources: Sequence[str], shape: tuple[int, int], dtype: type[np.floating],
              samplerate: int, holder: str | None = None) -> Draft | None:
        """A new entry `key` of `sources`, each `shape` (channels, frames) of `dtype`, to be written region
        by region and kept once complete (`Draft`); None where `put` would keep nothing."""
        size = len(sources) * shape[0] * shape[1] * np.dtype(dtype).itemsize
        if not self.enabled or size > self.max_bytes or self._refused(key, holder):
            return None
        staging = self._staging(key)
        try:
            staging.mkdir(parents=True)
            files = SourceFiles.create(staging, sources, dtype, *shape)
        except OSError as exc:
            log.warning("stem cache entry %s not begun: %s", key, exc)
            _remove(staging)
            return None
        return Draft(self, key, staging, files, samplerate, holder)

    def open(self, key: str, holder: str | None = None) -> OpenEntry | None:
        """The entry `key` open for region reads, as `get` finds it. Its files stay readable if it is
        evicted meanwhile."""
        found = self._use(key, holder, SourceFiles.open)
        return None if found is None else OpenEntry(*found)

    def _use(self, key: str, holder: str | None, read: Callable[[Path, list[str]], T]) -> tuple[T, int] | None:
        """What `read` makes of entry `key` (its folder and sources), and its rate; the entry marked as
        just used (and as held by `holder`). None if absent, or unreadable, which removes it."""
        with self._lock:
            if key not in self._entries:
                return None
            path = self.root / key
            try:
                meta = json.loads((path / META).read_text())
                found = read(path, list(meta["sources"])), int(meta["samplerate"])
                self._touch(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("stem cache entry %s unreadable, removed: %s", key, exc)
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            if holder is not None:
                self._hold(key, holder)
            return found

    def _staging(self, key: str) -> Path:
        return self.root / f"{TEMPORARY[0]}{key}-{uuid.uuid4().hex}"

    def _commit(self, key: str, staging: Path, sources: list[str], samplerate: int, holder: str | None) -> bool:
        """The entry written in `staging` given its meta and holder and renamed into place as `key`,
        evicting to make room; False (and removed) where `put` refuses it."""
        try:
            (staging / META).write_text(json.dumps({"format": FORMAT_VERSION, "samplerate": samplerate,
                                                    "sources": sources, "written": time.time()}))
            size = _size(staging)  # with the files' headers
            if holder is not None:
                (staging / HOLDERS).mkdir()
                (staging / HOLDERS / holder).touch()
        except OSError as exc:
            log.warning("stem cache entry %s not written: %s", key, exc)
            _remove(staging)
            return False
        with self._lock:
            if self._refused_locked(key, holder) or size > self.max_bytes:
                _remove(staging)
                return False
            self._evict(size)
            try:
                os.rename(staging, self.root / key)
            except OSError as exc:  # another process's entry of the same name
                log.warning("stem cache entry %s not kept: %s", key, exc)
                _remove(staging)
                return False
            self._touch(self.root / key)
            self._entries[key] = size
            self._bytes += size
            if holder is not None:
                self._note(key, holder)
        return True

    def _refused(self, key: str, holder: str | None) -> bool:
        with self._lock:
            return self._refused_locked(key, holder)

    def _refused_locked(self, key: str, holder: str | None) -> bool:
        """Whether a put of `key` by `holder` keeps nothing new (lock held): its holder was forgotten
        (deleted while it ran), or the entry exists already, which `holder` then holds too."""
        if holder is not None and holder in self._forgotten:
            return True
        if key not in self._entries:
            return False
        if holder is not None:
            self._hold(key, holder)
        return True

    def forget(self, holder: str) -> int:
        """`holder` holds nothing any more (and keeps nothing it is still writing): the entries it
        was the last to hold are deleted. How many went."""
        removed = 0
        with self._lock:
            self._forgotten[holder] = None
            self._forgotten.move_to_end(holder)
            while len(self._forgotten) > FORGOTTEN_KEPT:
                self._forgotten.popitem(last=False)
            for key in self._held.pop(holder, set()):
                holders = self._holders.get(key, set())
                holders.discard(holder)
                if not holders:
                    self._drop(key)
                    removed += 1
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(self.root / key / HOLDERS / holder)
        return removed

    def _hold(self, key: str, holder: str) -> None:
        """Mark `holder` as holding entry `key`, on disk and in the index (lock held)."""
        if holder in self._forgotten or holder in self._holders.get(key, ()):
            return
        try:
            (self.root / key / HOLDERS).mkdir(exist_ok=True)
            (self.root / key / HOLDERS / holder).touch()
        except OSError as exc:
            log.warning("stem cache entry %s: its holder not written: %s", key, exc)
        self._note(key, holder)

    def _note(self, key: str, holder: str) -> None:
        self._holders.setdefault(key, set()).add(holder)
        self._held.setdefault(holder, set()).add(key)

    def _touch(self, path: Path) -> None:
        """Stamp an entry as used now: its directory's mtime, strictly after every earlier use (the
        clock's granularity would otherwise let two uses tie), is its place in the order on reopen."""
        self._last_use = max(time.time_ns(), self._last_use + 1)
        os.utime(path, ns=(self._last_use, self._last_use))

    def _evict(self, incoming: int) -> None:
        """Remove the least recently used entries until `incoming` more bytes fit (lock held)."""
        while self._entries and self._bytes + incoming > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        """Forget and delete an entry: renamed away first, so no reader ever opens half of it."""
        self._bytes -= self._entries.pop(key, 0)
        for holder in self._holders.pop(key, set()):
            held = self._held.get(holder)
            if held is not None:
                held.discard(key)
                if not held:
                    del self._held[holder]
        trash = self.root / f"{TEMPORARY[1]}{key}-{uuid.uuid4().hex}"
        try:
            os.rename(self.root / key, trash)
        except OSError:
            return
        _remove(trash)
