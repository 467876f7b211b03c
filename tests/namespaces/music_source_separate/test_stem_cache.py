"""The stem cache: entries kept and memory-mapped back, LRU by bytes, atomic writes, rebuilt on reopen,
keys scoped by appkey, entries deleted with the last job that held them."""

from __future__ import annotations

import json
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


def drafted(cache: StemCache, key: str, kept: dict[str, np.ndarray], step: int, holder: str | None = None) -> bool:
    """`kept` written into a new entry `step` frames at a time, then committed."""
    draft = cache.begin(key, list(kept), (2, FRAMES), np.float16, 44100, holder)
    assert draft is not None
    stacked = np.stack([array.astype(np.float32) for array in kept.values()])
    for start in range(0, FRAMES, step):
        draft.write(start, stacked[:, :, start:start + step])
    return draft.commit()


def test_an_entry_written_region_by_region_is_the_one_put_writes(tmp_path: Path) -> None:
    kept = sources(3, ("drums", "vocals"))
    put, drafts = StemCache(tmp_path / "put", 1 << 20), StemCache(tmp_path / "drafts", 1 << 20)
    assert put.put("k", kept, 44100, "job") and drafted(drafts, "k", kept, 333, "job")
    for name in (*(f"{source}.npy" for source in kept), "holders/job"):
        assert (tmp_path / "drafts" / "k" / name).read_bytes() == (tmp_path / "put" / "k" / name).read_bytes()
    metas = [json.loads((tmp_path / cache / "k" / "meta.json").read_text()) for cache in ("put", "drafts")]
    assert [{**meta, "written": 0} for meta in metas] == [{"format": 2, "samplerate": 44100,
                                                          "sources": ["drums", "vocals"], "written": 0}] * 2
    assert abs(drafts.total_bytes - put.total_bytes) < 8 and drafts.holders("k") == {"job"}  # meta.json: its time
    opened = drafts.open("k")
    assert opened is not None and opened.samplerate == 44100 and opened.files.names == ("drums", "vocals")
    read = [(start, stems) for start, stems in opened.files.regions(400)]
    assert str(tmp_path / "drafts") not in Path("/proc/self/maps").read_text()  # read, never mapped
    opened.files.close()
    assert [start for start, _ in read] == [0, 400, 800] and read[-1][1].shape == (2, 2, 200)
    np.testing.assert_array_equal(np.concatenate([stems for _, stems in read], axis=-1), np.stack(list(kept.values())))
    assert drafts.open("other") is None


def test_a_draft_is_kept_only_whole_and_else_leaves_nothing(tmp_path: Path) -> None:
    cache = StemCache(tmp_path / "c", ENTRY_BYTES + SLACK)
    draft = cache.begin("k", ["vocals"], (2, FRAMES), np.float16, 44100)
    assert draft is not None
    draft.write(0, np.zeros((1, 2, FRAMES // 2), np.float32))
    with pytest.raises(ValueError, match="a region at 0 after 500"):
        draft.write(0, np.zeros((1, 2, 10), np.float32))  # regions come in order
    assert not draft.commit() and "k" not in cache  # half written
    cache.begin("k", ["vocals"], (2, FRAMES), np.float16, 44100).discard()  # type: ignore[union-attr]
    assert list((tmp_path / "c").iterdir()) == []
    assert cache.begin("k", ["vocals", "drums"], (2, FRAMES), np.float16, 44100) is None  # past the bound
    assert StemCache(tmp_path / "off", 0).begin("k", ["vocals"], (2, FRAMES), np.float16, 44100) is None
    cache.forget("gone")
    assert cache.begin("k", ["vocals"], (2, FRAMES), np.float16, 44100, "gone") is None
    assert drafted(cache, "k", sources(1), 1000)
    assert cache.begin("k", ["vocals"], (2, FRAMES), np.float16, 44100, "job") is None  # kept: now held by it too
    assert cache.holders("k") == {"job"}


def test_an_input_is_hashed_in_chunks_its_mapped_pages_let_go(tmp_path: Path) -> None:
    import hashlib
    import mmap

    from namespaces.music_source_separate.pipeline import stem_cache
    from sami_gateway.runtime.namespace import FileMap

    data = np.random.default_rng(0).integers(0, 256, 3 * stem_cache.HASH_CHUNK + 5, np.uint8).tobytes()
    (tmp_path / "input").write_bytes(data)
    with open(tmp_path / "input", "rb") as handle:
        mapped = FileMap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    expected = hashlib.sha256(data).hexdigest()
    assert stem_cache.input_sha256(data) == stem_cache.input_sha256(mapped) == expected
    assert mapped[-5:] == data[-5:]  # read again from the file after its pages were let go
    mapped.close()
