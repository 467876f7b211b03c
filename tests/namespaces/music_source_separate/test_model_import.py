"""Importing layers (checksum verified) and bag files into the store, all or nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG, save_package, tiny_htdemucs
from namespaces.music_source_separate.models.importing import check_bag
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import store_files


def test_import_files(repo: ModelRepository, store: Path, model_store: Path) -> None:
    layer = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    imported = repo.import_files([layer, model_store / "htdemucs.yaml"])
    assert [p.name for p in imported] == [layer.name, "htdemucs.yaml"]
    assert (store / layer.name).read_bytes() == layer.read_bytes()
    assert repo.get_model("htdemucs").sources == ("drums", "bass", "other", "vocals")


def test_import_refuses_wrong_or_missing_checksum(repo: ModelRepository, store: Path, model_store: Path,
                                                  tmp_path: Path) -> None:
    good = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    wrong = tmp_path / f"{HTDEMUCS_SIG}-00000000.th"
    bare = tmp_path / f"{HTDEMUCS_SIG}.th"
    bad_bag = tmp_path / "broken.yaml"
    for path in (wrong, bare):
        shutil.copy(good, path)
    bad_bag.write_text("weights: []\n")
    for path, message in ((wrong, "checksum mismatch"), (bare, "<sig>-<sha256 prefix>.th"),
                          (bad_bag, "not a bag file")):
        with pytest.raises(ModelStoreError, match=message):
            repo.import_files([good, path])  # all or nothing: the good one is not copied either
        assert store_files(store) == []


@pytest.mark.parametrize(("data", "message"), [
    (b"models: [", "not a bag file"),
    (b"- a list\n", "needs `models: "),
    (b"models: []\n", "needs `models: "),
    (b"models: ['a', 'b']\nweights: [[1.0]]\n", "one row per model"),
])
def test_check_bag_refuses(data: bytes, message: str) -> None:
    with pytest.raises(ModelStoreError, match=message):
        check_bag(data, "x.yaml")
    check_bag(b"models: ['a', 'b']\nweights: [[1.0], [0.5]]\n", "x.yaml")


def test_import_replaces_another_version_of_a_layer(repo: ModelRepository, store: Path, model_store: Path) -> None:
    store.mkdir()
    other = save_package(tiny_htdemucs(99), store, HTDEMUCS_SIG)
    layer = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    repo.import_files([layer])
    assert store_files(store) == [layer.name] and not other.exists()
