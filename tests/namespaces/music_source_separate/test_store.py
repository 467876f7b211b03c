"""The model store: Demucs layout, checksums, specialists, clear failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, write_bag
from namespaces.music_source_separate.models.layout import ModelStoreError, load_ensemble


@pytest.fixture
def store(model_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(model_store, copy)
    return copy


def test_bag_loads_all_members_with_weights(model_store: Path) -> None:
    bag = load_ensemble(model_store, "htdemucs_ft")
    assert len(bag.members) == 4
    assert bag.sources == ("drums", "bass", "other", "vocals")
    assert [m.weights.index(1.0) for m in bag.members] == [0, 1, 2, 3]


def test_only_load_reads_one_file(store: Path) -> None:
    for sig in HTDEMUCS_FT_SIGS[:3]:  # the other specialists are not even needed on disk
        next(store.glob(f"{sig}-*.th")).unlink()
    vocals = load_ensemble(store, "htdemucs_ft", "vocals")
    assert len(vocals.members) == 1 and vocals.members[0].weights == (0.0, 0.0, 0.0, 1.0)
    assert vocals.name == "htdemucs_ft:vocals"


def test_checksum_mismatch_is_refused(store: Path) -> None:
    path = next(store.glob("955717e8-*.th"))
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(ModelStoreError, match="checksum"):
        load_ensemble(store, "htdemucs")


def test_missing_model_names_model_store_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError) as info:
        load_ensemble(tmp_path, "htdemucs")
    message = str(info.value)
    assert "htdemucs" in message and str(tmp_path) in message and "SAMI_MODEL_DIR" in message


def test_missing_layer_of_a_bag(store: Path) -> None:
    next(store.glob(f"{HTDEMUCS_FT_SIGS[0]}-*.th")).unlink()
    with pytest.raises(ModelStoreError, match=HTDEMUCS_FT_SIGS[0]):
        load_ensemble(store, "htdemucs_ft")


def test_bag_segment_shortens_htdemucs(store: Path) -> None:
    write_bag(store, "short", ("955717e8",), segment=4)
    model = load_ensemble(store, "short").members[0].model
    assert float(model.segment) == 4.0


def test_unknown_stem(store: Path) -> None:
    with pytest.raises(ModelStoreError, match="piano"):
        load_ensemble(store, "htdemucs_ft", "piano")


def test_file_without_checksum_is_not_unpickled(store: Path) -> None:
    path = next(store.glob("955717e8-*.th"))
    path.rename(store / "955717e8.th")
    with pytest.raises(ModelStoreError, match="no checksum"):
        load_ensemble(store, "htdemucs")


def test_missing_model_message_says_how_to_fetch_or_import(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError) as info:
        load_ensemble(tmp_path, "htdemucs_ft", "vocals")
    message = str(info.value)
    assert "'htdemucs_ft'" in message and str(tmp_path) in message
    assert "sami-gateway models fetch htdemucs_ft" in message and "sami-gateway models import FILE..." in message
