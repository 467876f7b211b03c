"""Streamed separation against the whole-song computation: Demucs's own and the engine's."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from torch import Tensor

from namespaces.music_source_separate.demo_store import SOURCES
from namespaces.music_source_separate.engine.ensemble import Ensemble, Member
from namespaces.music_source_separate.engine.inference import NORM_EPSILON, Precision, RunOptions, separate
from namespaces.music_source_separate.models.layout import load_ensemble
from namespaces.music_source_separate.streaming import ArrayBlocks, MixStatistics, Region, separate_stream

RATE = 44100
TOLERANCE = 1e-4  # the bound, before quantisation
GOAL = 1e-6  # what exact precision reaches on one machine


@pytest.fixture(scope="module")
def single(model_store: Path) -> Ensemble:
    return load_ensemble(model_store, "htdemucs")


@pytest.fixture(scope="module")
def bag(model_store: Path) -> Ensemble:
    return load_ensemble(model_store, "htdemucs_ft")


def song(seconds: float, seed: int = 0) -> Tensor:
    """A stereo mix with an offset and a level that change over time, so that normalising matters."""
    torch.manual_seed(seed)
    frames = int(seconds * RATE)
    level = 0.05 + 0.3 * torch.linspace(0, 1, frames).sin().abs()
    return (torch.randn(2, frames) * level + 0.02).float()


def demucs_separate(model: torch.nn.Module, mix: Tensor, shifts: int = 0) -> Tensor:
    """Demucs's whole-song separation: normalised by the mix's mono reference, then scaled back."""
    reference = mix.mean(0)
    mean, std = reference.mean(), reference.std() + NORM_EPSILON
    with torch.no_grad():
        out = apply_model(model, ((mix - mean) / std)[None], shifts=shifts, split=True, overlap=0.25)[0]
    return out * std + mean


def streamed(ensemble: Ensemble, mix: Tensor, block_frames: int = 1 << 16, **kwargs: object) -> Tensor:
    regions = list(separate_stream(ensemble, ArrayBlocks(mix.numpy(), RATE, block_frames), **kwargs))  # type: ignore[arg-type]
    assert [r.start for r in regions] == [0] + [r.stop for r in regions[:-1]]  # in order, no gap
    return torch.cat([r.stems for r in regions], dim=-1)


def whole_statistics(mix: Tensor) -> MixStatistics:
    """The statistics as torch takes them on the whole song (float32 results)."""
    reference = mix.mean(0)
    return MixStatistics(mix.shape[-1], reference.mean().item(), reference.std().item())


@pytest.mark.timeout(900)  # about a minute on an idle 2-CPU machine, both separations together
def test_three_minutes_streamed_equal_demucs_on_the_whole_song(single: Ensemble) -> None:
    mix = song(180.0)
    expected = demucs_separate(single.members[0].model, mix)
    ours = streamed(single, mix)
    assert ours.shape == expected.shape
    diff = (ours - expected).abs().max().item()
    print(f"3-minute stream against apply_model: max abs diff {diff:.3g}")
    assert diff <= GOAL


def test_a_shift_matches_demucs(single: Ensemble) -> None:
    """Demucs draws its shift from `random` before any model call; seeded the same, the streamed
    shift is the same (several shifts are compared with the engine below, as test_engine does)."""
    mix = song(10.0, seed=1)
    random.seed(7)
    expected = demucs_separate(single.members[0].model, mix, shifts=1)
    assert (streamed(single, mix, options=RunOptions(shifts=1, seed=7)) - expected).abs().max() <= GOAL


def test_bag_weights_match_demucs(bag: Ensemble) -> None:
    weights = [[1.0, 0.5, 0.0, 2.0], [0.0, 1.0, 1.0, 1.0], [0.25, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]]
    members = [m.model for m in bag.members]
    reference = BagOfModels(members, weights)
    mix = song(10.0, seed=2)
    weighted = Ensemble(bag.name, tuple(type(m)(m.model, tuple(w)) for m, w in zip(bag.members, weights, strict=True)),
                        bag.sources, bag.samplerate, bag.audio_channels)
    assert (streamed(weighted, mix, block_frames=7777) - demucs_separate(reference, mix)).abs().max() <= GOAL


@pytest.mark.parametrize("options", [RunOptions(), RunOptions(shifts=2, seed=3)], ids=["plain", "shifts"])
def test_same_statistics_give_the_engines_very_output(single: Ensemble, options: RunOptions) -> None:
    """With the whole song's float32 statistics every frame goes through the same operations."""
    mix = song(12.0, seed=3)
    expected = separate(single, mix, options)
    assert torch.equal(streamed(single, mix, 30000, statistics=whole_statistics(mix), options=options), expected)


@pytest.mark.parametrize("build", [
    lambda: HDemucs(sources=list(SOURCES), channels=4, segment=4),  # Demucs's own unit-test size
    lambda: Demucs(sources=list(SOURCES), channels=8, depth=4, segment=4),
], ids=["hdemucs", "demucs"])
def test_other_architectures_read_context_past_their_segments(build: Callable[[], torch.nn.Module]) -> None:
    """Models whose valid length exceeds the segment read the mix past both of its ends."""
    torch.manual_seed(8)
    model = build().eval()
    ensemble = Ensemble("m", (Member(model, (1.0,) * len(model.sources)),), tuple(model.sources),
                        model.samplerate, model.audio_channels)
    mix = song(9.0, seed=8)
    expected = separate(ensemble, mix)
    assert torch.equal(streamed(ensemble, mix, 5000, statistics=whole_statistics(mix)), expected)


def test_only_load_specialist_equals_the_engines(bag: Ensemble) -> None:
    mix = song(12.0, seed=4)
    expected = separate(bag, mix, only_stem="vocals")
    ours = streamed(bag, mix, 300000, statistics=whole_statistics(mix), only_stem="vocals")
    assert torch.equal(ours, expected)
    others = ours[[index for index, name in enumerate(bag.sources) if name != "vocals"]]
    assert others.eq(others[0, 0, 0]).all()  # not estimated: zero before the scale is restored


@pytest.mark.parametrize(("seconds", "block_frames"), [(2.0, 4099), (7.8, 1 << 20), (9.5, 4099)])
def test_short_mixes_and_block_sizes(single: Ensemble, seconds: float, block_frames: int) -> None:
    """Shorter than a segment, about one, one plus a remainder; small blocks and the whole at once."""
    mix = song(seconds, seed=5)
    assert (streamed(single, mix, block_frames) - separate(single, mix)).abs().max() <= GOAL


def test_fast_precision_within_its_snr(single: Ensemble) -> None:
    """`fast` streamed keeps the SNR that `fast` has against `exact` on the whole song."""
    mix = song(12.0, seed=6)
    exact = separate(single, mix)
    fast_whole = separate(single, mix, RunOptions(precision=Precision.FAST))
    fast_streamed = streamed(single, mix, options=RunOptions(precision=Precision.FAST))

    def snr(estimate: Tensor) -> float:
        return float(10 * torch.log10(exact.double().pow(2).sum() / (exact.double() - estimate.double()).pow(2).sum()))

    assert snr(fast_streamed) > 30
    assert snr(fast_streamed) >= snr(fast_whole) - 0.5


def test_a_mix_shorter_or_longer_than_announced_is_refused(single: Ensemble) -> None:
    class Lying(ArrayBlocks):
        frames = 5 * RATE

    for seconds in (4.0, 6.0):
        source = Lying(song(seconds).numpy(), RATE)
        with pytest.raises(ValueError, match="frames"):
            list(separate_stream(single, source, MixStatistics(5 * RATE, 0.0, 1.0)))


def test_regions_are_handed_on_before_the_mix_is_read_to_its_end(single: Ensemble) -> None:
    mix = song(40.0, seed=7)
    read: list[int] = []

    class Counting(ArrayBlocks):
        def blocks(self):  # type: ignore[no-untyped-def]
            for block in super().blocks():
                read.append(block.shape[-1])
                yield block

    source = Counting(mix.numpy(), RATE, 1 << 15)
    first: Region = next(iter(separate_stream(single, source, whole_statistics(mix))))
    assert first.start == 0 and first.stems.shape[:2] == (4, 2)
    assert sum(read) < 15 * RATE  # about a segment read, not the song
    assert np.isfinite(first.stems.numpy()).all()
