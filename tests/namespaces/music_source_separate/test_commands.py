"""`sami-gateway separate`, in process, on the tiny demo store."""

from __future__ import annotations

from pathlib import Path

import pytest

from namespaces.music_source_separate.demo_store import SOURCES
from sami_gateway.cli.main import main
from tests.conftest import wav_bytes


@pytest.fixture
def songs(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path in paths:
        path.write_bytes(wav_bytes(0.5))
    return paths


def separate(songs: list[Path], out: Path, model_store: Path, *flags: str) -> int:
    return main(["separate", *map(str, songs), "-o", str(out), "--shifts", "0", "--precision", "exact",
                 "--model-dir", str(model_store), *flags])


def written(out: Path, song: Path) -> list[str]:
    return sorted(path.name for path in (out / "htdemucs" / song.stem).iterdir())


def test_every_file_gets_every_stem(songs: list[Path], model_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert separate(songs, out, model_store) == 0
    for song in songs:
        assert written(out, song) == sorted(f"{stem}.wav" for stem in SOURCES)


def test_two_stems_gives_every_file_the_stem_and_its_complement(songs: list[Path], model_store: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert separate(songs, out, model_store, "--two-stems", "vocals") == 0
    for song in songs:
        assert written(out, song) == ["no_vocals.wav", "vocals.wav"]


def test_separate_keeps_freed_memory_unless_told_not_to(songs: list[Path], model_store: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from sami_gateway.runtime import heap

    calls: list[int] = []

    def retain() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(heap, "retain_freed_memory", retain)
    assert separate(songs[:1], tmp_path / "out", model_store, "--device", "cpu") == 0
    assert calls == [1]
    monkeypatch.setenv("SAMI_RETAIN_FREED_MEMORY", "false")
    assert separate(songs[:1], tmp_path / "out2", model_store, "--device", "cpu") == 0
    assert calls == [1]


def test_separate_command(model_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    song = tmp_path / "song.wav"
    song.write_bytes(wav_bytes(0.5))
    out = tmp_path / "out"
    code = main(["separate", str(song), "-m", "htdemucs", "--two-stems", "vocals", "-o", str(out),
                 "--format", "flac", "--shifts", "0", "--model-dir", str(model_store)])
    assert code == 0
    written = sorted(p.name for p in (out / "htdemucs" / "song").iterdir())
    assert written == ["no_vocals.flac", "vocals.flac"]
    assert "chunk" in capsys.readouterr().err  # the progress bar
    assert main(["separate", str(song), "--two-stems", "kazoo", "--model-dir", str(model_store)]) == 2
    (tmp_path / "bad.wav").write_bytes(b"not audio" * 20)
    assert main(["separate", str(tmp_path / "bad.wav"), "--model-dir", str(model_store)]) == 2
