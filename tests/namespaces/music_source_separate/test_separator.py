"""The Demucs-style Python API (Separator, SeparatedSources, select_model) on the tiny demo store."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from namespaces.music_source_separate import ModelRepository, SeparatedSources, Separator, select_model
from sami_gateway.cli.main import main
from tests.conftest import tone, wav_bytes


@pytest.fixture(scope="module")
def separator(model_store: Path) -> Separator:
    return Separator("htdemucs", "cpu", repository=ModelRepository(model_store, "http://127.0.0.1:9/"),
                     precision="exact")


def test_every_input_kind_gives_the_same_stems(separator: Separator, tmp_path: Path) -> None:
    data = wav_bytes(1.0)
    path = tmp_path / "song.wav"
    path.write_bytes(data)
    wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    results = [separator.separate(item, shifts=0) for item in
               (data, path, str(path), (torch.from_numpy(wav.T.copy()), rate))]
    for result in results:
        assert set(result.sources) == {"drums", "bass", "other", "vocals"}
        assert result.sample_rate == 44100 and result["vocals"].shape == (2, 44100)
        assert torch.allclose(result["vocals"], results[0]["vocals"], atol=1e-6)


def test_progress_events(separator: Separator) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    separator.separate(wav_bytes(20.0, rate=8000, channels=1), shifts=0,
                       progress_callback=lambda e, d: events.append((e, d)))
    names = [event for event, _ in events]
    total = events[0][1]["total_chunks"]
    assert names == ["processing_start"] + ["chunk_complete"] * total + ["processing_complete"]
    assert [d["completed_chunks"] for e, d in events if e == "chunk_complete"] == list(range(1, total + 1))
    assert total == 4 and events[-1][1] == {"total_chunks": total}


def test_resampling_and_mono_input(separator: Separator) -> None:
    mono = torch.from_numpy(tone(0.5, 22050, 1)[:, 0])
    result = separator.separate((mono, 22050), shifts=0)
    assert result.original.shape == (2, 22050) and result["drums"].shape == (2, 22050)


def test_isolate_stem_sums_the_rest(separator: Separator) -> None:
    result = separator.separate(wav_bytes(0.5), shifts=0)
    isolated = result.isolate_stem("vocals")
    assert set(isolated.sources) == {"vocals", "no_vocals"}
    rest = result["drums"] + result["bass"] + result["other"]
    assert torch.allclose(isolated["no_vocals"], rest, atol=1e-6)
    with pytest.raises(KeyError):
        result.isolate_stem("piano")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_export_stem(tmp_path: Path, fmt: str) -> None:
    result = SeparatedSources({"loud": torch.full((2, 4410), 3.0)}, 44100, torch.zeros(2, 4410))
    data = result.export_stem("loud", format=fmt)
    assert isinstance(data, bytes)
    written = result.export_stem("loud", tmp_path / f"x.{fmt}", format=fmt)
    assert written == tmp_path / f"x.{fmt}" and written.read_bytes()[:4] == data[:4]
    if fmt != "mp3":
        audio, rate = sf.read(io.BytesIO(data), always_2d=True)
        assert rate == 44100 and audio.shape == (4410, 2)
        assert 0.95 < np.abs(audio).max() < 1.0  # rescaled, not clipped


def test_clip_modes() -> None:
    result = SeparatedSources({"s": torch.tensor([[2.0, -0.5, 0.25]])}, 8000, torch.zeros(1, 3))
    clamped, _ = sf.read(io.BytesIO(result.export_stem("s", clip="clamp")))
    assert clamped[0] == pytest.approx(0.99, abs=1e-3) and clamped[1] == pytest.approx(-0.5, abs=1e-3)
    rescaled, _ = sf.read(io.BytesIO(result.export_stem("s")))
    assert rescaled[1] == pytest.approx(-0.5 / 2.02, abs=1e-3)
    with pytest.raises(ValueError):
        result.export_stem("s", clip="fold")


def test_only_load_and_use_only_stem(model_store: Path) -> None:
    repository = ModelRepository(model_store, "http://127.0.0.1:9/")
    specialist = Separator("htdemucs_ft", "cpu", only_load="vocals", repository=repository, precision="exact")
    assert len(specialist.model.members) == 1
    bag = Separator("htdemucs_ft", "cpu", repository=repository, precision="exact")
    alone = bag.separate(wav_bytes(0.5), shifts=0, use_only_stem="vocals")
    assert set(alone.sources) == {"vocals"}
    assert torch.allclose(alone["vocals"], specialist.separate(wav_bytes(0.5), shifts=0)["vocals"], atol=1e-6)


def test_separator_leaves_the_allocator_alone(model_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def retain() -> bool:
        calls.append(1)
        return True

    from sami_gateway.runtime import heap

    monkeypatch.setattr(heap, "retain_freed_memory", retain)
    Separator("htdemucs", "cpu", repository=ModelRepository(model_store, "http://127.0.0.1:9/"))
    assert calls == []  # a process-wide choice: its callers make it (runtime.heap)


def test_select_model(tmp_path: Path) -> None:
    audio = (torch.zeros(2, 100), 44100)
    assert select_model(audio) == ("htdemucs", None)
    assert select_model([audio, audio], isolate_stem="vocals") == ("htdemucs_ft", "vocals")
    assert select_model(audio, isolate_stem="piano") == ("htdemucs_6s", None)
    with pytest.raises(ValueError):
        select_model(audio, isolate_stem="kazoo")
    with pytest.raises(FileNotFoundError):
        select_model(tmp_path / "missing.wav")


def test_demucs_examples_run_against_an_imported_store(model_store: Path, tmp_path: Path) -> None:
    """seeds/000's examples with the import line changed, on a store filled by `models import`."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    store = tmp_path / ".cache" / "sami-gateway" / "models"  # the library's default store, under HOME
    assert main(["models", "import", *map(str, sorted(model_store.iterdir())), "--model-dir", str(store)]) == 0
    (tmp_path / "song.wav").write_bytes(wav_bytes(1.0))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAMI_")}, "HOME": str(tmp_path),
           "SAMI_MODEL_DIR": str(tmp_path / "elsewhere"), "PYTHONPATH": str(ROOT)}  # the library reads no SAMI_*
    run = subprocess.run([sys.executable, str(ROOT / "examples/python/demucs_api.py"), "song.wav"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "processing_complete" in run.stdout and str(store.resolve()) in run.stdout
    for name in ("vocals.wav", "no_vocals.mp3", "vocals_ft.wav"):
        assert (tmp_path / name).stat().st_size > 1000
