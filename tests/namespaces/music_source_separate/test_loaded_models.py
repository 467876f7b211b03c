"""Loaded models: loaded on first use, kept within the bound, least recently used unloaded, leases respected."""

from __future__ import annotations

import threading
import time

import pytest

from namespaces.music_source_separate.models.loaded import LoadedModels


class Loader:
    """Counts loads; `gate`, when set, holds every load until it opens."""

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.gate: threading.Event | None = None

    def __call__(self, key: str) -> object:
        if self.gate is not None:
            self.gate.wait(10)
        if key == "broken":
            raise OSError("unreadable")
        self.loads.append(key)
        return object()


def use(models: LoadedModels[str, object], *keys: str) -> None:
    for key in keys:
        models.release(models.acquire(key))


def test_loaded_once_then_reused() -> None:
    loader = Loader()
    models: LoadedModels[str, object] = LoadedModels(loader, 2)
    first = models.acquire("a")
    models.release(first)
    second = models.acquire("a")
    assert second.value is first.value and loader.loads == ["a"]


def test_the_least_recently_used_is_unloaded() -> None:
    loader = Loader()
    models: LoadedModels[str, object] = LoadedModels(loader, 2)
    use(models, "a", "b", "a", "c")  # b is the least recently used when c comes
    assert models.loaded() == ["a", "c"]
    use(models, "b")
    assert models.loaded() == ["c", "b"] and loader.loads == ["a", "b", "c", "b"]


def test_a_model_in_use_is_never_unloaded() -> None:
    models: LoadedModels[str, object] = LoadedModels(Loader(), 1)
    held = models.acquire("a")
    other = models.acquire("b")  # over the bound while a is leased
    assert models.loaded() == ["a", "b"]
    models.release(other)  # b is idle and past the bound: it goes, a stays
    assert models.loaded() == ["a"]
    models.release(held)
    use(models, "c")
    assert models.loaded() == ["c"]


def test_concurrent_requests_for_one_model_load_it_once() -> None:
    loader = Loader()
    loader.gate = threading.Event()
    models: LoadedModels[str, object] = LoadedModels(loader, 1)
    values: list[object] = []
    threads = [threading.Thread(target=lambda: values.append(models.acquire("a").value)) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    loader.gate.set()
    for thread in threads:
        thread.join(10)
    assert loader.loads == ["a"] and len(values) == 3 and len({id(v) for v in values}) == 1


def test_a_failed_load_is_raised_and_tried_again_next_time() -> None:
    models: LoadedModels[str, object] = LoadedModels(Loader(), 1)
    use(models, "a")
    for _ in range(2):
        with pytest.raises(OSError, match="unreadable"):
            models.acquire("broken")
    assert models.loaded() == []  # room was made for it before its load


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        LoadedModels(Loader(), 0)
