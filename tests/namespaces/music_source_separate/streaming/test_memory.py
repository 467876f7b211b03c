"""The working set of a streamed separation does not grow with the song's length."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from namespaces.music_source_separate.engine.ensemble import Ensemble
from namespaces.music_source_separate.engine.inference import ModelCall
from namespaces.music_source_separate.models.layout import load_ensemble
from namespaces.music_source_separate.streaming import separate_stream, separation
from namespaces.music_source_separate.streaming.segments import SegmentRun
from namespaces.music_source_separate.streaming.window import MixWindow

ROOT = Path(__file__).resolve().parents[4]
RATE = 44100
MIB = 1 << 20
GROWTH_LIMIT = 48 * MIB  # 3 more minutes of four stereo float32 stems alone would be 254 MB


class GeneratedSong:
    """A song made block by block and never held whole: tones and noise, seeded by the block."""

    rate, channels = RATE, 2

    def __init__(self, seconds: float, block_frames: int = 1 << 16) -> None:
        self.frames = int(seconds * RATE)
        self.block_frames = block_frames

    def blocks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, self.block_frames):
            count = min(self.block_frames, self.frames - start)
            t = (start + np.arange(count)) / RATE
            noise = np.random.default_rng(start).standard_normal((2, count)) * 0.05
            yield (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def consume(regions: Iterator[object]) -> int:
    return sum(1 for _ in regions)


def peaks_after(store: Path, seconds: tuple[float, ...]) -> list[int]:
    """The process's peak RSS after each separation of `seconds` of song, in order, in this process."""
    ensemble = load_ensemble(store, "htdemucs")
    peaks = []
    for length in seconds:
        consume(separate_stream(ensemble, GeneratedSong(length)))
        peaks.append(peak_rss())
    return peaks


@pytest.mark.timeout(900)  # about a minute on an idle 2-CPU machine
def test_four_minutes_take_no_more_memory_than_one(model_store: Path) -> None:
    """In a process of its own: the suite's process carries the heap of every test before this one
    (and the gateway's allocator settings, which keep freed memory), whose high-water mark moves
    with whatever allocates first, not with the song."""
    code = ("import sys; from pathlib import Path; "
            "from tests.namespaces.music_source_separate.streaming.test_memory import peaks_after; "
            "print(*peaks_after(Path(sys.argv[1]), (20.0, 60.0, 240.0)))")  # the first one warms pools and model
    out = subprocess.run([sys.executable, "-c", code, str(model_store)], cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=850).stdout
    before, one_minute, four_minutes = (int(value) for value in out.split()[-3:])
    print(f"peak RSS: {before / MIB:.0f} MiB warm, {one_minute / MIB:.0f} MiB after 1 min, "
          f"{four_minutes / MIB:.0f} MiB after 4 min")
    assert four_minutes - one_minute <= GROWTH_LIMIT


def echo(call: ModelCall) -> torch.Tensor:
    """A stand-in for the network: the input as each of four sources."""
    return call.input[:, None].expand(1, 4, *call.input.shape[1:]).clone()


def test_the_frames_held_do_not_depend_on_the_length(model_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The largest window of the mix and overlap-added estimate held, for 1 and 6 minutes: under the
    same bound, a segment and a block of the mix and two segments of estimate."""
    held: dict[str, int] = {}

    class Window(MixWindow):
        def append(self, block: torch.Tensor) -> None:
            super().append(block)
            held["window"] = max(held.get("window", 0), self.samples.shape[-1])

    class Run(SegmentRun):
        def accept(self, estimate: torch.Tensor) -> None:
            super().accept(estimate)
            assert self.sum is not None
            held["estimate"] = max(held.get("estimate", 0), self.sum.shape[-1] + self.ready_end - self.ready_start)

    monkeypatch.setattr(separation, "MixWindow", Window)
    monkeypatch.setattr(separation, "SegmentRun", Run)
    ensemble: Ensemble = load_ensemble(model_store, "htdemucs")
    figures = []
    for seconds in (60.0, 360.0):
        held.clear()
        consume(separate_stream(ensemble, GeneratedSong(seconds), run=echo))
        figures.append(dict(held))
    segment = int(ensemble.members[0].model.segment * RATE)
    for figure in figures:
        assert figure["window"] <= segment + (1 << 16) and figure["estimate"] <= 2 * segment
    assert figures[0]["estimate"] == figures[1]["estimate"]
