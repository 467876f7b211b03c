"""Importing MSST checkpoints into the store: verified, stored under a checksummed name, listed with
their family, sources, rate, chunk, overlap and licence, loaded on demand; a malformed or mismatched
checkpoint or config is refused by name and leaves the store as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from namespaces.music_source_separate.commands import register
from namespaces.music_source_separate.engine.inference import Precision, drive
from namespaces.music_source_separate.models.catalogue import Catalogue
from namespaces.music_source_separate.models.families import load_stored
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.listing import StoreModels
from namespaces.music_source_separate.models.repository import ModelRepository
from namespaces.music_source_separate.separator import Separator
from sami_gateway.cli.main import main

from .tiny import CONFIGS, MDX23C, MEL_BAND_ROFORMER, write_checkpoint


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    source = tmp_path / "downloads"
    source.mkdir()
    (source / "mel.yaml").write_text(MEL_BAND_ROFORMER)
    (source / "mdx.yaml").write_text(MDX23C)
    return {"mel_config": source / "mel.yaml", "mdx_config": source / "mdx.yaml",
            "mel": write_checkpoint(source / "mel.ckpt", MEL_BAND_ROFORMER),
            "mdx": write_checkpoint(source / "mdx.ckpt", MDX23C)}


@pytest.fixture
def repository(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "store", catalogue=Catalogue.packaged())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()} \
        if root.exists() else {}


def test_an_import_is_stored_under_its_checksum_and_listed(repository: ModelRepository,
                                                           files: dict[str, Path]) -> None:
    entry = repository.import_family("tiny_mel", files["mel"], files["mel_config"], licence="CC-BY-4.0")
    folder = repository.root / "families"
    assert sorted(os.listdir(folder)) == sorted([entry.checkpoint, "tiny_mel.yaml"])
    assert entry.checkpoint.startswith("tiny_mel-") and entry.checkpoint.endswith(".ckpt")
    assert (folder / entry.checkpoint).read_bytes() == files["mel"].read_bytes()  # as given
    listed = repository.list_models()["tiny_mel"]
    assert listed["cached"] and listed["family"] == "mel_band_roformer" and listed["licence"] == "CC-BY-4.0"
    assert (listed["sources"], listed["sample_rate"], listed["chunk_size"], listed["num_overlap"]) == \
        (["vocals"], 44100, 1280, 2)
    assert "tiny_mel" in repository.get_cache_info()
    info = StoreModels(repository.root).describe("tiny_mel")
    assert info.sources == ("vocals",) and info.family is not None and info.family.licence == "CC-BY-4.0"
    assert [model.name for model in StoreModels(repository.root).models()] == ["tiny_mel"]


def test_the_licence_defaults_to_unknown_and_an_import_replaces_the_old_version(
        repository: ModelRepository, files: dict[str, Path], tmp_path: Path) -> None:
    first = repository.import_family("tiny", files["mel"], files["mel_config"])
    assert first.licence == "unknown"
    second = repository.import_family("tiny", files["mdx"], files["mdx_config"], licence="MIT")
    assert sorted(os.listdir(repository.root / "families")) == sorted([second.checkpoint, "tiny.yaml"])
    assert StoreModels(repository.root).describe("tiny").sources == ("vocals", "instrumental")
    assert repository.remove_model("tiny") and os.listdir(repository.root / "families") == []


def test_a_loaded_import_separates_as_its_network(repository: ModelRepository, files: dict[str, Path]) -> None:
    repository.import_family("tiny_mel", files["mel"], files["mel_config"])
    mix = torch.randn(2, 3000) * 0.3
    ensemble = load_stored(repository.root, "tiny_mel")
    with torch.inference_mode():
        expected = drive(ensemble.members[0].model.demix_steps(mix, Precision.EXACT))
    separator = Separator("tiny_mel", "cpu", repository=repository, precision="exact")
    assert separator.sources == ("vocals",) and separator.samplerate == 44100
    separated = separator.separate((mix, 44100), shifts=1)
    torch.testing.assert_close(separated["vocals"], expected[0])
    assert sorted(separated.isolate_stem("vocals").sources) == ["no_vocals", "vocals"]


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_family_imports_and_separates(repository: ModelRepository, tmp_path: Path, family: str) -> None:
    (tmp_path / "config.yaml").write_text(CONFIGS[family])
    entry = repository.import_family(family, write_checkpoint(tmp_path / "model.ckpt", CONFIGS[family]),
                                     tmp_path / "config.yaml")
    assert entry.config.family.value == family
    separator = Separator(family, "cpu", repository=repository, precision="exact")
    separated = separator.separate((torch.randn(2, 2500) * 0.3, 44100))
    assert list(separated.sources) == list(entry.config.sources)
    assert all(stem.shape == (2, 2500) and bool(torch.isfinite(stem).all()) for stem in separated.sources.values())


def test_a_tampered_checkpoint_is_not_loaded(repository: ModelRepository, files: dict[str, Path]) -> None:
    entry = repository.import_family("tiny_mel", files["mel"], files["mel_config"])
    path = repository.root / "families" / entry.checkpoint
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ModelStoreError, match="checksum mismatch"):
        repository.get_model("tiny_mel")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("change, field", [
    (lambda t: _replace(t, "num_overlap: 2", "num_overlap: 0"), "inference.num_overlap"),
    (lambda t: _replace(t, "chunk_size: 1280", "chunk_size: -3"), "audio.chunk_size"),
    (lambda t: _replace(t, "target_instrument: vocals", "target_instrument: guitar"), "training.target_instrument"),
    (lambda t: _replace(t, "  num_bands: 8\n", "  num_bands: 8\n  use_pope: true\n"), "model.use_pope"),
    (lambda t: _replace(t, "  num_bands: 8\n", "  num_bands: 8\n  colour: blue\n"), "model.colour"),
    (lambda t: _replace(t, "stereo: true", "stereo: false"), "model.stereo"),
    (lambda t: _replace(t, "num_stems: 2", "num_stems: 3"), "model.num_stems"),
    (lambda t: _replace(t, "instruments: [vocals, other]", "instruments: []"), "training.instruments"),
    (lambda t: "model: [", "not YAML"),
    (lambda t: t.replace("training:", "trainin:"), "`training`"),
])
def test_a_malformed_config_is_refused_by_field_and_the_store_left_alone(
        repository: ModelRepository, files: dict[str, Path], change, field: str) -> None:  # type: ignore[no-untyped-def]
    repository.import_family("kept", files["mdx"], files["mdx_config"])
    before = snapshot(repository.root)
    files["mel_config"].write_text(change(MEL_BAND_ROFORMER))
    with pytest.raises(ModelStoreError, match=field.replace(".", r"\.").replace("[", r"\[")):
        repository.import_family("tiny_mel", files["mel"], files["mel_config"])
    assert snapshot(repository.root) == before


def test_a_mismatched_checkpoint_is_refused_by_parameter_and_the_store_left_alone(
        repository: ModelRepository, files: dict[str, Path], tmp_path: Path) -> None:
    mdx_weights = r"missing layers\.0\.0\.layers\.0\.0\.norm\.gamma.*unexpected first_conv\.weight"
    with pytest.raises(ModelStoreError, match=mdx_weights):
        repository.import_family("tiny_mel", files["mdx"], files["mel_config"])
    wider = tmp_path / "wider.yaml"
    wider.write_text(_replace(MEL_BAND_ROFORMER, "dim: 16", "dim: 24"))
    narrower = r"parameter layers\.0\.0\.layers\.0\.0\.norm\.gamma has shape \(16,\) in the checkpoint but \(24,\)"
    with pytest.raises(ModelStoreError, match=narrower):
        repository.import_family("tiny_mel", files["mel"], wider)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelStoreError, match="not a PyTorch checkpoint"):
        repository.import_family("tiny_mel", garbage, files["mel_config"])
    with pytest.raises(ModelStoreError, match="a Demucs model has that name"):
        repository.import_family("htdemucs", files["mel"], files["mel_config"])
    assert not repository.root.exists()


def test_the_command_imports_with_a_licence(files: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert register  # the plugin's commands are what `sami-gateway` runs
    for name in [name for name in os.environ if name.startswith("SAMI_")]:
        monkeypatch.delenv(name)
    store = tmp_path / "cli-store"
    assert main(["models", "import", "tiny_mel", "--checkpoint", str(files["mel"]), "--config",
                 str(files["mel_config"]), "--licence", "CC-BY-NC-4.0", "--model-dir", str(store)]) == 0
    assert "imported tiny_mel: mel_band_roformer, sources vocals" in capsys.readouterr().out
    assert main(["models", "list", "--model-dir", str(store)]) == 0
    assert "chunks of 1280 samples, overlap 2 (licence: CC-BY-NC-4.0)" in capsys.readouterr().out
    files["mel_config"].write_text(_replace(MEL_BAND_ROFORMER, "num_overlap: 2", "num_overlap: x"))
    assert main(["models", "import", "other", "--checkpoint", str(files["mel"]), "--config",
                 str(files["mel_config"]), "--model-dir", str(store)]) == 2
    assert "inference.num_overlap" in capsys.readouterr().err
