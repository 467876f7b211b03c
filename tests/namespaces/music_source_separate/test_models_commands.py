"""`sami-gateway models list | fetch | import | info | remove`, in process, against a loopback server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG
from namespaces.music_source_separate.models.catalogue import Catalogue
from sami_gateway.cli.main import main

from .model_server import ModelServer, Remote, serve


@pytest.fixture
def server(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelServer]:
    """The test catalogue stands in for the one the demucs package ships."""
    monkeypatch.setattr(Catalogue, "packaged", classmethod(lambda cls: remote.catalogue))
    with serve(remote) as running:
        yield running


@dataclass(frozen=True)
class Models:
    """`sami-gateway models ACTION ARGS... --model-dir STORE --model-url SERVER` -> exit code."""

    store: Path
    url: str

    def __call__(self, action: str, *args: str) -> int:
        return main(["models", action, *args, "--model-dir", str(self.store), "--model-url", self.url])


@pytest.fixture
def models(tmp_path: Path, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> Models:
    monkeypatch.delenv("SAMI_CONFIG", raising=False)
    return Models(tmp_path / "store", server.url)


def test_list_fetch_info_remove(models: Models, remote: Remote, server: ModelServer,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert models("list") == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["NAME", "CACHED", "SIZE", "DESCRIPTION"]
    assert any(line.split()[:3] == ["htdemucs", "no", "-"] for line in listing)

    assert models("fetch", "htdemucs") == 0
    captured = capsys.readouterr()
    assert f"htdemucs: 1 layers in {models.store.resolve()}" in captured.out
    assert "htdemucs 1/1" in captured.err and "downloaded" in captured.err  # the progress bar
    assert (models.store / remote.layer_file(HTDEMUCS_SIG)).is_file()

    assert models("fetch", "htdemucs") == 0
    assert "cached" in capsys.readouterr().err
    assert server.requests == [remote.catalogue.layers[HTDEMUCS_SIG].path]

    assert models("list") == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("htdemucs "))
    assert row.split()[:2] == ["htdemucs", "yes"] and "KiB" in row

    assert models("info") == 0
    out = capsys.readouterr().out
    assert f"model store: {models.store.resolve()}" in out
    assert any(line.split()[:2] == ["htdemucs", "1"] for line in out.splitlines())

    assert models("remove", "htdemucs") == 0
    assert capsys.readouterr().out.strip() == "removed htdemucs"
    assert list(models.store.iterdir()) == []
    assert models("remove", "htdemucs") == 0
    assert capsys.readouterr().out.strip() == "htdemucs was not in the store"


def test_fetch_errors_exit_2(models: Models, capsys: pytest.CaptureFixture[str]) -> None:
    assert models("fetch", "nope") == 2
    assert capsys.readouterr().err.startswith("sami-gateway: unknown model 'nope'")
    assert models("fetch", "corrupt") == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert list(models.store.iterdir()) == []


def test_import(models: Models, model_store: Path, tmp_path: Path,
                capsys: pytest.CaptureFixture[str]) -> None:
    layer = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    assert models("import", str(layer), str(model_store / "htdemucs.yaml")) == 0
    out = capsys.readouterr().out
    assert f"imported {models.store / layer.name}" in out and "htdemucs.yaml" in out
    bare = tmp_path / f"{HTDEMUCS_SIG}.th"
    bare.write_bytes(layer.read_bytes())
    assert models("import", str(bare)) == 2
    assert capsys.readouterr().err.startswith(f"sami-gateway: refusing {bare}")


def test_store_flags_before_the_action(tmp_path: Path, server: ModelServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--model-dir", str(tmp_path), "--model-url", server.url, "info"]) == 0
    assert f"model store: {tmp_path.resolve()}" in capsys.readouterr().out


def test_list_of_the_packaged_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--model-dir", str(tmp_path)]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra"} <= set(names)


def test_models_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models"])
    assert info.value.code == 2


def test_command_registration_does_not_import_torch() -> None:
    code = ("import sys; from sami_gateway.cli.main import build_parser; build_parser();"
            "assert 'namespaces.music_source_separate.commands' in sys.modules;"
            "assert 'torch' not in sys.modules and 'demucs' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
