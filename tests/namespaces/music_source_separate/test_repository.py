"""ModelRepository: its defaults, listing, loading, cache info and removal, on a loopback server."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import pytest
import torch

from namespaces.music_source_separate.defaults import DEFAULT_MODEL_DIR, OFFICIAL_MODEL_URL
from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, HTDEMUCS_SIG
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import ModelServer, Recorder, Remote, store_files


def test_defaults_are_the_library_constants_not_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("SAMI_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("SAMI_MODEL_URL", "http://mirror.invalid/demucs")
    repo = ModelRepository()
    assert repo.get_cache_dir() == DEFAULT_MODEL_DIR.expanduser().resolve()
    assert repo.base_url == OFFICIAL_MODEL_URL
    repo = ModelRepository(tmp_path, "http://mirror.invalid/demucs")
    assert repo.get_cache_dir() == tmp_path.resolve()
    assert repo.base_url == "http://mirror.invalid/demucs/"


def test_list_models_cached_and_local(repo: ModelRepository, store: Path, remote: Remote,
                                      server: ModelServer) -> None:
    before = repo.list_models()
    assert not before["htdemucs"]["cached"]
    assert before["htdemucs"]["layers"][0]["url"] == (
        f"{server.url}hybrid_transformer/{remote.layer_file(HTDEMUCS_SIG)}")
    repo.fetch("htdemucs")
    (store / "mine.yaml").write_text(f"models: ['{HTDEMUCS_SIG}']\n")
    after = repo.list_models()
    assert after["htdemucs"]["cached"] and not after["htdemucs_ft"]["cached"]
    assert after["mine"]["cached"] and after["mine"]["local"]


def test_get_model_returns_the_ensemble(repo: ModelRepository) -> None:
    recorder = Recorder()
    ensemble = repo.get_model("htdemucs", progress_callback=recorder)
    assert ensemble.sources == ("drums", "bass", "other", "vocals") and len(ensemble.members) == 1
    assert recorder.names()[0] == "download_start" and recorder.names()[-1] == "download_complete"


def test_get_model_only_load(repo: ModelRepository) -> None:
    vocals = repo.get_model("htdemucs_ft", only_load="vocals")
    assert vocals.name == "htdemucs_ft:vocals"
    assert [m.weights for m in vocals.members] == [(0.0, 0.0, 0.0, 1.0)]


def test_quantized_name_without_diffq_fails_before_downloading(
        repo: ModelRepository, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffq", None)
    with pytest.raises(ModelStoreError, match="needs the diffq package: pip install diffq"):
        repo.get_model("tiny_q")
    assert server.requests == []


def test_quantized_state_without_diffq_is_refused(repo: ModelRepository, store: Path, model_store: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffq", None)
    package = torch.load(next(model_store.glob(f"{HTDEMUCS_SIG}-*.th")), weights_only=False)
    package["state"] = {"__quantized": True, "quantized": []}
    buffer = io.BytesIO()
    torch.save(package, buffer)
    store.mkdir()
    (store / f"5a000000-{hashlib.sha256(buffer.getvalue()).hexdigest()[:8]}.th").write_bytes(buffer.getvalue())
    (store / "custom.yaml").write_text("models: ['5a000000']\n")
    with pytest.raises(ModelStoreError, match="custom is a quantized model.*pip install diffq"):
        repo.get_model("custom")


def test_cache_info_sizes(repo: ModelRepository, store: Path, remote: Remote) -> None:
    assert repo.get_cache_info() == {}
    repo.fetch("htdemucs")
    repo.fetch("htdemucs_ft")
    info = repo.get_cache_info()
    assert set(info) == {"htdemucs", "htdemucs_ft"}
    layer = remote.catalogue.layers[HTDEMUCS_SIG]
    size = len(remote.layer_bytes(HTDEMUCS_SIG))
    assert info["htdemucs"] == {"layers": {layer.checksum: {"path": store.resolve() / layer.file,
                                                            "size_bytes": size}},
                                "size_bytes": size}
    assert len(info["htdemucs_ft"]["layers"]) == 4
    assert info["htdemucs_ft"]["size_bytes"] == sum(len(remote.layer_bytes(s)) for s in HTDEMUCS_FT_SIGS)


def test_remove_model_keeps_layers_other_models_use(repo: ModelRepository, store: Path, remote: Remote) -> None:
    repo.fetch("htdemucs")
    (store / "mine.yaml").write_text(f"models: ['{HTDEMUCS_SIG}']\n")
    assert repo.remove_model("htdemucs") is True
    assert store_files(store) == [remote.layer_file(HTDEMUCS_SIG), "mine.yaml"]
    assert repo.remove_model("mine") is True
    assert store_files(store) == []
    assert repo.remove_model("htdemucs") is False
    with pytest.raises(ModelStoreError, match="unknown model"):
        repo.remove_model("mine")
