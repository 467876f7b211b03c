"""Reading a checkpoint's sources from its pickle: both torch formats, nothing imported or run."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from namespaces.music_source_separate.demo_store import SOURCES, tiny_htdemucs
from namespaces.music_source_separate.models.layer_header import HeaderError, read_sources


class Trap:
    """Unpickled for real, it creates a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def package(**extra: object) -> dict[str, object]:
    model = tiny_htdemucs(0)
    args, kwargs = model._init_args_kwargs
    return {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": model.state_dict(), **extra}


def test_sources_of_the_demo_store(model_store: Path) -> None:
    for path in model_store.glob("*.th"):
        assert read_sources(path) == SOURCES


def test_sources_of_the_legacy_format(tmp_path: Path) -> None:
    path = tmp_path / "legacy.th"
    torch.save(package(), path, _use_new_zipfile_serialization=False)
    assert read_sources(path) == SOURCES


def test_nothing_in_the_pickle_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "trap.th"
    torch.save(package(trap=Trap(str(marker))), path)
    assert read_sources(path) == SOURCES
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps([1, 2, 3]),
                                     pickle.dumps({"kwargs": {"sources": []}}), pickle.dumps({"kwargs": 3})])
def test_what_is_not_a_checkpoint_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.th"
    path.write_bytes(content)
    with pytest.raises(HeaderError):
        read_sources(path)


def test_a_zip_without_its_record_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/byteorder", "little")
    path = tmp_path / "x.th"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(HeaderError, match="data.pkl"):
        read_sources(path)
