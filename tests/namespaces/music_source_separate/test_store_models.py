"""The store described without loading a model: layers, sources, specialists, what is missing, read once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, HTDEMUCS_SIG, SOURCES
from namespaces.music_source_separate.models import listing as store_listing
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.listing import ModelNotInStore, StoreModels


@pytest.fixture
def store(model_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(model_store, copy)
    return copy


def test_a_single_model(model_store: Path) -> None:
    info = StoreModels(model_store).describe("htdemucs")
    assert info.sources == SOURCES and not info.is_bag and not info.specialists
    assert info.layer_files() == info.layer_files("vocals") == (next(model_store.glob(f"{HTDEMUCS_SIG}-*.th")).name,)


def test_a_bag_and_its_specialists(model_store: Path) -> None:
    info = StoreModels(model_store).describe("htdemucs_ft")
    assert info.is_bag and info.sources == SOURCES
    assert dict(info.specialists) == dict(zip(SOURCES, HTDEMUCS_FT_SIGS, strict=True))
    assert len(info.layer_files()) == 4
    assert info.layer_files("vocals") == (next(model_store.glob(f"{HTDEMUCS_FT_SIGS[3]}-*.th")).name,)


def test_a_specialist_alone_on_disk_is_enough_for_itself(store: Path) -> None:
    for sig in HTDEMUCS_FT_SIGS[:3]:
        next(store.glob(f"{sig}-*.th")).unlink()
    info = StoreModels(store).describe("htdemucs_ft")
    assert len(info.layer_files("vocals")) == 1
    with pytest.raises(ModelNotInStore) as missing:
        info.layer_files()
    assert missing.value.catalogued  # htdemucs_ft is in the official catalogue


@pytest.mark.parametrize(("name", "catalogued"), [("htdemucs_6s", True), ("mdx_extra", True), ("my_model", False)])
def test_a_model_not_in_the_store(model_store: Path, name: str, catalogued: bool) -> None:
    with pytest.raises(ModelNotInStore) as missing:
        StoreModels(model_store).describe(name)
    assert missing.value.name == name and missing.value.catalogued is catalogued


@pytest.mark.parametrize("name", ["../htdemucs", "", "a/b", ".hidden"])
def test_a_name_that_is_no_model_name(model_store: Path, name: str) -> None:
    with pytest.raises(ModelStoreError, match="invalid model name"):
        StoreModels(model_store).describe(name)


def test_a_model_added_later_is_seen_and_headers_are_read_once(store: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = store_listing.read_sources
    monkeypatch.setattr(store_listing, "read_sources", lambda path: reads.append(path.name) or real(path))
    empty = tmp_path / "later"
    models = StoreModels(empty)
    with pytest.raises(ModelNotInStore):
        models.describe("htdemucs")
    empty.mkdir()
    for path in [store / "htdemucs.yaml", *store.glob(f"{HTDEMUCS_SIG}-*.th")]:
        shutil.copy(path, empty)
    for _ in range(3):
        assert models.describe("htdemucs").sources == SOURCES
    assert len(reads) == 1


def test_a_bare_layer_is_a_model(store: Path) -> None:
    (store / "htdemucs.yaml").unlink()
    assert StoreModels(store).describe(HTDEMUCS_SIG).sources == SOURCES


def test_a_layer_without_its_checksum_is_not_counted(store: Path) -> None:
    layer = next(store.glob(f"{HTDEMUCS_SIG}-*.th"))
    layer.rename(store / f"{HTDEMUCS_SIG}.th")  # store.py refuses to load such a file
    with pytest.raises(ModelNotInStore):
        StoreModels(store).describe("htdemucs")


def test_two_versions_of_a_layer_are_refused(store: Path) -> None:
    layer = next(store.glob(f"{HTDEMUCS_SIG}-*.th"))
    shutil.copy(layer, store / f"{HTDEMUCS_SIG}-0123abcd.th")
    with pytest.raises(ModelStoreError, match="several files"):
        StoreModels(store).describe("htdemucs")


def test_models_are_the_bags_and_the_layers_no_bag_names(store: Path) -> None:
    assert [info.name for info in StoreModels(store).models()] == ["htdemucs", "htdemucs_ft"]
    (store / "htdemucs.yaml").unlink()  # its layer is a model of its own now
    (store / "empty.yaml").write_text("models: [0badc0de]\n")  # no layer present: not a model
    (store / "broken.yaml").write_text("models: [\n")  # unreadable: left out
    listed = StoreModels(store).models()
    assert [info.name for info in listed] == [HTDEMUCS_SIG, "htdemucs_ft"]
    assert listed[0].sources == SOURCES and listed[1].is_bag


def test_models_list_a_bag_missing_a_layer_and_read_each_header_once(store: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = store_listing.read_sources
    monkeypatch.setattr(store_listing, "read_sources", lambda path: reads.append(path.name) or real(path))
    next(store.glob(f"{HTDEMUCS_FT_SIGS[0]}-*.th")).unlink()
    models = StoreModels(store)
    for _ in range(3):
        listed = {info.name: info for info in models.models()}
        assert set(listed) == {"htdemucs", "htdemucs_ft"}  # described; `layer_files` says it cannot load
    with pytest.raises(ModelNotInStore):
        listed["htdemucs_ft"].layer_files()
    assert len(reads) == 2  # one header per model, on the first listing only


@pytest.mark.parametrize("text", ["", "just words\n", "- a\n- list\n", "models: 3\n", "weights: [[1]]\n"])
def test_a_yaml_file_that_is_no_bag_is_left_out_and_refused_by_name(store: Path, text: str) -> None:
    (store / "x.yaml").write_text(text)
    models = StoreModels(store)
    assert [info.name for info in models.models()] == ["htdemucs", "htdemucs_ft"]
    with pytest.raises(ModelStoreError, match=r"x\.yaml is not a bag file"):
        models.describe("x")


def test_descriptions_share_one_listing(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[Path] = []
    real = store_listing.os.scandir

    def scandir(path: Path) -> object:
        if path == store:  # not the installed demucs package's catalogue
            scans.append(path)
        return real(path)

    monkeypatch.setattr(store_listing.os, "scandir", scandir)
    models = StoreModels(store)
    listing = models.listing()
    assert [info.name for info in models.models(listing)] == ["htdemucs", "htdemucs_ft"]
    assert models.describe("htdemucs_ft", listing).is_bag
    assert len(scans) == 1
    models.describe("htdemucs")  # without a listing: the store as it is now
    assert len(scans) == 2


def test_a_missing_demucs_package_is_looked_for_once(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    looked: list[bool] = []

    def packaged() -> None:
        looked.append(True)
        raise ModelStoreError("the demucs package is not installed: it ships the model catalogue")

    monkeypatch.setattr(store_listing.Catalogue, "packaged", packaged)
    models = StoreModels(store)
    for _ in range(3):
        assert [info.catalogued for info in models.models()] == [False, False]
    assert looked == [True]
