"""Separated stems kept on disk, bounded by bytes, least recently used evicted first.

An entry is a directory named by its key, holding `meta.json` (sample rate, sources) and one
`<source>.npy` per source, which readers memory-map. It is written under a temporary name and
renamed into place, so a reader sees a whole entry or none; temporary and half-deleted entries
left by a crash are removed when the cache opens. The index is rebuilt from the directories
on open, their modification times giving the order of last use (a hit touches its entry).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # part of every key: a change of layout or meaning makes old entries unreachable
META = "meta.json"
TEMPORARY = (".tmp-", ".trash-")  # prefixes of entries being written or deleted


@dataclass(frozen=True)
class CachedStems:
    """A cache entry: each source (channels, frames), memory-mapped read-only, at `samplerate`."""

    sources: Mapping[str, np.ndarray]
    samplerate: int


def cache_key(input_sha256: str, model: str, precision: str) -> str:
    """The entry name for an input (its sha256), a model's identity and the inference precision."""
    text = "\0".join((f"v{FORMAT_VERSION}", input_sha256, model, precision))
    return hashlib.sha256(text.encode()).hexdigest()


def _size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class StemCache:
    """Entries under `root`, their total size at most `max_bytes` (0: the cache keeps nothing)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recently used first
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

    def _open(self) -> None:
        """Index the entries left by earlier runs (oldest use first), removing unfinished ones."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = []
        for entry in os.scandir(self.root):
            path = Path(entry.path)
            if entry.name.startswith(TEMPORARY):
                _remove(path)
            elif entry.is_dir() and (path / META).is_file():
                found.append((entry.stat().st_mtime_ns, entry.name, _size(path)))
        for used, key, size in sorted(found):
            self._entries[key] = size
            self._bytes += size
            self._last_use = max(self._last_use, used)
        self._evict(0)
        log.info("stem cache %s: %d entries, %d bytes", self.root, len(self._entries), self._bytes)

    def get(self, key: str) -> CachedStems | None:
        """The entry `key`, marked as just used; None if absent (or unreadable, which removes it)."""
        with self._lock:
            if key not in self._entries:
                return None
            path = self.root / key
            try:
                meta = json.loads((path / META).read_text())
                sources = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["sources"]}
                self._touch(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("stem cache entry %s unreadable, removed: %s", key, exc)
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return CachedStems(sources, int(meta["samplerate"]))

    def put(self, key: str, sources: Mapping[str, np.ndarray], samplerate: int) -> bool:
        """Keep `sources` (name -> (channels, frames)) under `key`, evicting the least recently used
        entries to make room; False if the entry alone exceeds the bound or the key is already kept."""
        size = sum(array.nbytes for array in sources.values())
        if not self.enabled or size > self.max_bytes or key in self:
            return False
        staging = self.root / f"{TEMPORARY[0]}{key}-{uuid.uuid4().hex}"
        try:
            staging.mkdir(parents=True)
            for name, array in sources.items():
                np.save(staging / f"{name}.npy", np.ascontiguousarray(array))
            (staging / META).write_text(json.dumps({"samplerate": samplerate, "sources": list(sources),
                                                    "written": time.time()}))
            size = _size(staging)  # with the files' headers
        except OSError as exc:
            log.warning("stem cache entry %s not written: %s", key, exc)
            _remove(staging)
            return False
        with self._lock:
            if key in self._entries or size > self.max_bytes:
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
        return True

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
        trash = self.root / f"{TEMPORARY[1]}{key}-{uuid.uuid4().hex}"
        try:
            os.rename(self.root / key, trash)
        except OSError:
            return
        _remove(trash)
