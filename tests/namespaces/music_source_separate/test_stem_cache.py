"""The stem cache: entries kept and memory-mapped back, LRU by bytes, atomic writes, rebuilt on reopen,
keys scoped by appkey, entries deleted with the last job that held them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.pipeline.stem_cache import FORGOTTEN_KEPT, StemCache, cache_key, holder_name

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


@pytest.mark.parametrize("changed", [("h2", "m", "fast", "a"), ("h", "m2", "fast", "a"), ("h", "m", "exact", "a"),
                                     ("h", "m", "fast", "b"), ("h", "m", "fast", "")])
def test_the_key_depends_on_input_model_precision_and_scope(changed: tuple[str, str, str, str]) -> None:
    assert cache_key("h", "m", "fast", "a") != cache_key(*changed)
    assert cache_key("h", "m", "fast", "a") == cache_key("h", "m", "fast", "a")


def entries(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir())


def test_an_entry_goes_with_the_last_job_that_held_it(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    first, second = holder_name("a", "job_1"), holder_name("a", "job_2")
    assert cache.put("k", sources(0), 44100, first)
    assert cache.put("other", sources(1), 44100)  # an invoke's: held by no job
    assert cache.get("k", second) is not None  # a second job used it: it holds it too
    assert cache.holders("k") == {first, second}
    assert cache.forget(first) == 0
    assert "k" in cache and entries(tmp_path / "c") == ["k", "other"]
    assert cache.forget(second) == 1
    assert "k" not in cache and entries(tmp_path / "c") == ["other"]  # its files are gone from disk
    assert cache.forget(second) == 0 and "other" in cache


def test_a_job_that_computed_an_entry_already_kept_holds_it_too(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    first, second = holder_name("a", "job_1"), holder_name("a", "job_2")
    assert cache.put("k", sources(0), 44100, first)
    assert not cache.put("k", sources(0), 44100, second)  # both missed and ran: one entry, two holders
    cache.forget(first)
    assert cache.get("k") is not None
    cache.forget(second)
    assert "k" not in cache and entries(tmp_path / "c") == []


def test_a_forgotten_job_keeps_nothing_its_run_finishes_later(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    deleted = holder_name("a", "job_1")
    cache.forget(deleted)  # deleted while its separation still ran on a thread
    assert not cache.put("k", sources(0), 44100, deleted)
    assert "k" not in cache and entries(tmp_path / "c") == []
    assert cache.put("k", sources(0), 44100, holder_name("a", "job_2"))
    assert cache.get("k", deleted) is not None and deleted not in cache.holders("k")


def test_only_the_last_jobs_forgotten_are_remembered(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", 1 << 20)
    for n in range(FORGOTTEN_KEPT + 1):
        cache.forget(f"h{n}")
    assert cache.put("k", sources(0), 44100, "h0")  # the oldest fell out of the bounded memory
    assert not cache.put("k2", sources(0), 44100, f"h{FORGOTTEN_KEPT}")


def test_holders_survive_a_reopen(tmp_path: Path) -> None:
    root = tmp_path / "c"
    first = StemCache(root, 1 << 20)
    first.put("k", sources(0), 44100, holder_name("a", "job_1"))
    again = StemCache(root, 1 << 20)
    assert again.holders("k") == {holder_name("a", "job_1")}
    assert again.forget(holder_name("a", "job_1")) == 1 and entries(root) == []


def test_entries_of_an_older_format_are_removed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "c"
    StemCache(root, 1 << 20).put("new", sources(0), 44100)
    old = root / "old"  # format 1: keyed without the appkey, so shared by every appkey
    old.mkdir()
    (old / "meta.json").write_text('{"samplerate": 44100, "sources": ["vocals"]}')
    np.save(old / "vocals.npy", sources(1)["vocals"])
    cache = StemCache(root, 1 << 20)
    assert len(cache) == 1 and "new" in cache and not old.exists()
