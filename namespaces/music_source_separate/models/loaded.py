"""Models loaded on first use and kept within a bound, the least recently used unloaded first.

A separation holds a lease on its model for as long as it runs: a leased model is never
unloaded (the bound is exceeded instead, until a lease ends). Loading happens on the thread
that asks first, outside the lock; others asking for the same model wait for that load.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(eq=False)
class _Slot(Generic[V]):
    value: V | None = None
    users: int = 0  # leases held, and threads waiting for the load
    loading: bool = True
    failed: BaseException | None = None


@dataclass(frozen=True, eq=False)
class Lease(Generic[K, V]):
    """One use of a loaded model; give it back with `LoadedModels.release`."""

    key: K
    value: V


class LoadedModels(Generic[K, V]):
    """At most `capacity` models kept loaded (more only while leased), by last use."""

    def __init__(self, load: Callable[[K], V], capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._load = load
        self.capacity = capacity
        self._slots: OrderedDict[K, _Slot[V]] = OrderedDict()  # least recently used first
        self._changed = threading.Condition()

    def loaded(self) -> list[K]:
        """The models loaded now, least recently used first."""
        with self._changed:
            return [key for key, slot in self._slots.items() if not slot.loading]

    def acquire(self, key: K) -> Lease[K, V]:
        """A lease on the model `key`, loading it here (after unloading what the bound asks) if needed."""
        with self._changed:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(users=1)
                self._evict()
            else:
                self._slots.move_to_end(key)
                slot.users += 1
                while slot.loading:
                    self._changed.wait()
                if slot.failed is None:
                    assert slot.value is not None
                    return Lease(key, slot.value)
                slot.users -= 1
                raise slot.failed
        return self._load_into(key, slot)

    def _load_into(self, key: K, slot: _Slot[V]) -> Lease[K, V]:
        try:
            value = self._load(key)
        except BaseException as exc:
            with self._changed:
                slot.loading, slot.failed, slot.users = False, exc, slot.users - 1
                if self._slots.get(key) is slot:
                    del self._slots[key]  # the next request tries again
                self._changed.notify_all()
            raise
        with self._changed:
            slot.value, slot.loading = value, False
            self._changed.notify_all()
        log.info("loaded %s (%d of at most %d models loaded)", key, len(self.loaded()), self.capacity)
        return Lease(key, value)

    def release(self, lease: Lease[K, V]) -> None:
        """End a lease; models past the bound that no one uses are unloaded now."""
        with self._changed:
            slot = self._slots.get(lease.key)
            if slot is not None and slot.value is lease.value:
                slot.users -= 1
            self._evict()

    def clear(self) -> None:
        """Forget every model that no one uses (on stop)."""
        with self._changed:
            for key in [key for key, slot in self._slots.items() if not slot.users]:
                del self._slots[key]

    def _evict(self) -> None:
        """Unload the least recently used idle models while more than `capacity` are held (lock held).

        A model being loaded counts: room is made before its load, so memory holds at most
        `capacity` models unless leases need more."""
        excess = len(self._slots) - self.capacity
        for key in [key for key, slot in self._slots.items() if not slot.users and not slot.loading]:
            if excess <= 0:
                break
            del self._slots[key]
            excess -= 1
            log.info("unloaded %s (at most %d models loaded)", key, self.capacity)
