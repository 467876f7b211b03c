"""The catalogue: the demucs package's `remote/` listing, a folder in its layout, descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from namespaces.music_source_separate.models.catalogue import OFFICIAL_MODEL_URL, Catalogue, describe, quantized_name
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import QUANTIZED_SIG, Remote


def test_packaged_catalogue_knows_every_pretrained_model(tmp_path: Path) -> None:
    models = ModelRepository(tmp_path, "https://example.invalid/demucs/").list_models()
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra",
                 "mdx_q", "mdx_extra_q", "repro_mdx_a"):
        assert name in models and models[name]["description"] and not models[name]["cached"]
    assert models["htdemucs"]["layers"] == [{
        "signature": "955717e8", "file": "955717e8-8726e21a.th", "checksum": "8726e21a",
        "url": "https://example.invalid/demucs/hybrid_transformer/955717e8-8726e21a.th"}]
    assert len(models["htdemucs_ft"]["layers"]) == 4
    assert models["mdx_extra_q"]["quantized"] and not models["mdx_extra"]["quantized"]
    assert models["mdx"]["layers"][0]["url"].endswith("/mdx_final/0d19c1c6-0f06f20e.th")


def test_packaged_catalogue_lists_layers_under_the_official_root() -> None:
    catalogue = Catalogue.packaged()
    assert catalogue.layers["955717e8"].path == "hybrid_transformer/955717e8-8726e21a.th"
    assert catalogue.bag_file("htdemucs") == catalogue.directory / "htdemucs.yaml"
    assert OFFICIAL_MODEL_URL == "https://dl.fbaipublicfiles.com/demucs/"
    assert "0d19c1c6" not in catalogue.quantized_signatures()  # mdx's layers are not quantized


def test_folder_in_the_remote_layout(remote: Remote) -> None:
    catalogue = remote.catalogue
    assert set(catalogue.bags) >= {"htdemucs", "htdemucs_ft", "tiny_q"}
    assert catalogue.quantized_signatures() == {QUANTIZED_SIG}
    assert quantized_name("tiny_q") and not quantized_name("htdemucs")


def test_unreadable_catalogue(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="cannot read the model catalogue"):
        Catalogue.from_dir(tmp_path)  # no files.txt
    (tmp_path / "files.txt").write_text("root: x/\nnot-a-layer.bin\n")
    with pytest.raises(ModelStoreError, match="is not <sig>-<sha256 prefix>.th"):
        Catalogue.from_dir(tmp_path)


def test_descriptions() -> None:
    assert describe("htdemucs", 1, False).startswith("Hybrid Transformer Demucs (v4)")
    assert describe("repro_mdx_a", 4, False) == "reproduction of a Demucs paper experiment (4 layers)"
    assert describe("mine", 2, True) == "model of this store (2 layers)"
    assert describe("other", 1, False) == "Demucs model (1 layers)"
