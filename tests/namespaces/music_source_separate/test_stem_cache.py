"""The stem cache: entries kept and memory-mapped back, LRU by bytes, atomic writes, rebuilt on reopen."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.stem_cache import StemCache, cache_key

FRAMES = 1000
ENTRY_BYTES = 2 * FRAMES * 2  # one float16 stereo source of FRAMES
SLACK = 1024  # the .npy headers and meta.json of one entry, at most


def sources(seed: int, names: tuple[str, ...] = ("vocals",)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((2, FRAMES)).astype(np.float16) for name in names}


def test_an_entry_comes_back_memory_mapped(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    kept = sources(0, ("drums", "vocals"))
    assert cache.put("k", kept, 44100)
    got = cache.get("k")
    assert got is not None and got.samplerate == 44100 and list(got.sources) == ["drums", "vocals"]
    for name, array in kept.items():
        assert isinstance(got.sources[name], np.memmap) and got.sources[name].dtype == np.float16
        np.testing.assert_array_equal(got.sources[name], array)
    assert cache.get("other") is None
    assert not cache.put("k", kept, 44100)  # kept once
    assert len(cache) == 1 and 2 * ENTRY_BYTES < cache.total_bytes < 2 * ENTRY_BYTES + SLACK


def test_zero_bytes_turns_it_off(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 0)
    assert not cache.enabled and not cache.put("k", sources(0), 44100) and cache.get("k") is None
    assert not (tmp_path / "c").exists()


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 2 * (ENTRY_BYTES + SLACK))
    for key in "ab":
        assert cache.put(key, sources(ord(key)), 44100)
    assert cache.get("a") is not None  # a is now newer than b
    assert cache.put("c", sources(3), 44100)
    assert "b" not in cache and "a" in cache and "c" in cache
    assert not (tmp_path / "c" / "b").exists() and cache.total_bytes <= cache.max_bytes


def test_an_entry_larger_than_the_bound_is_not_kept(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", ENTRY_BYTES + SLACK)
    assert cache.put("a", sources(1), 44100)
    assert not cache.put("big", sources(2, ("drums", "vocals")), 44100)
    assert "a" in cache and len(cache) == 1  # nothing was evicted for it


def test_reopening_rebuilds_the_index_in_order_of_use(tmp_path: Path) -> None:
    root = tmp_path / "c"
    first = StemCache(root, 3 * (ENTRY_BYTES + SLACK))
    for key in "abc":
        first.put(key, sources(ord(key)), 48000)
    first.get("a")  # order of use: b, c, a
    again = StemCache(root, 3 * (ENTRY_BYTES + SLACK))
    assert len(again) == 3 and again.total_bytes == first.total_bytes
    got = again.get("c")
    assert got is not None and got.samplerate == 48000
    np.testing.assert_array_equal(got.sources["vocals"], sources(ord("c"))["vocals"])
    again.put("d", sources(4), 48000)  # order of use was b, a, c: b goes
    assert "b" not in again and {"a", "c", "d"} <= {key for key in "abcd" if key in again}


def test_reopening_with_a_smaller_bound_evicts(tmp_path: Path) -> None:
    root = tmp_path / "c"
    first = StemCache(root, 3 * (ENTRY_BYTES + SLACK))
    for key in "abc":
        first.put(key, sources(ord(key)), 44100)
    smaller = StemCache(root, ENTRY_BYTES + SLACK)
    assert len(smaller) == 1 and "c" in smaller


def test_unfinished_entries_are_never_read_and_removed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "c"
    StemCache(root, 1 << 20).put("whole", sources(0), 44100)
    half = root / ".tmp-half-0123"  # a writer that crashed before its rename
    half.mkdir()
    (half / "vocals.npy").write_bytes(b"\x93NUMPY partial")
    trash = root / ".trash-gone-4567"  # an eviction that crashed before its delete
    trash.mkdir()
    (trash / "meta.json").write_text("{}")
    cache = StemCache(root, 1 << 20)
    assert len(cache) == 1 and cache.get("whole") is not None
    assert cache.get(".tmp-half-0123") is None and not half.exists() and not trash.exists()


def test_a_damaged_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    cache.put("k", sources(0), 44100)
    path = tmp_path / "c" / "k" / "vocals.npy"
    path.write_bytes(path.read_bytes()[:100])  # cut short, as a power loss might leave it
    assert cache.get("k") is None
    assert "k" not in cache and cache.total_bytes == 0 and not (tmp_path / "c" / "k").exists()


def test_concurrent_puts_of_one_key_keep_one_entry(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(cache.put("k", sources(0), 44100)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1 and len(cache) == 1
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["k"]  # no staging left behind


@pytest.mark.parametrize("changed", [("h2", "m", "fast"), ("h", "m2", "fast"), ("h", "m", "exact")])
def test_the_key_depends_on_input_model_and_precision(changed: tuple[str, str, str]) -> None:
    assert cache_key("h", "m", "fast") != cache_key(*changed)
    assert cache_key("h", "m", "fast") == cache_key("h", "m", "fast")
