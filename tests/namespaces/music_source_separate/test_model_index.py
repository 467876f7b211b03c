"""Model names resolved to their bags: catalogue bags, the store's own bag files, catalogue layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG
from namespaces.music_source_separate.models.files import StoreFiles
from namespaces.music_source_separate.models.index import ModelIndex
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import Remote


def test_unknown_or_invalid_name(repo: ModelRepository) -> None:
    with pytest.raises(ModelStoreError, match="unknown model 'nope'.*htdemucs_ft"):
        repo.fetch("nope")
    with pytest.raises(ModelStoreError, match="invalid model name"):
        repo.get_model("../htdemucs")


def test_resolve_catalogue_bags_store_bags_and_layers(store: Path, remote: Remote) -> None:
    index = ModelIndex(remote.catalogue, StoreFiles(store))
    htdemucs = index.resolve("htdemucs")
    assert htdemucs.signatures == (HTDEMUCS_SIG,) and not htdemucs.local
    assert htdemucs.bag_data() == remote.catalogue.bag_file("htdemucs").read_bytes()
    layer = index.resolve(HTDEMUCS_SIG)  # a catalogue layer alone: a one-line bag
    assert layer.signatures == (HTDEMUCS_SIG,) and layer.bag_data() == f"models:\n- {HTDEMUCS_SIG}\n".encode()
    store.mkdir()
    (store / "mine.yaml").write_text(f"models: ['{HTDEMUCS_SIG}', '{HTDEMUCS_SIG}']\n")
    (store / "-bad.yaml").write_text("models: ['x']\n")  # not a model name: not listed
    mine = index.resolve("mine")
    assert mine.local and mine.bag_data() is None and mine.signatures == (HTDEMUCS_SIG,)  # named twice, once
    names = [entry.name for entry in index.entries()]
    assert names[-1] == "mine" and "-bad" not in names and names[:-1] == list(remote.catalogue.bags)


def test_a_broken_store_bag_is_named(store: Path, remote: Remote) -> None:
    store.mkdir()
    (store / "broken.yaml").write_text("weights: []\n")
    with pytest.raises(ModelStoreError, match="broken.yaml is not a bag file"):
        ModelIndex(remote.catalogue, StoreFiles(store)).resolve("broken")
