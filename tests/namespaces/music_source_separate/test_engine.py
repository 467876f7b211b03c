"""Our chunked inference against demucs.apply.apply_model on tiny real-architecture models."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from demucs.apply import BagOfModels, apply_model
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs

from namespaces.music_source_separate.demo_store import SOURCES
from namespaces.music_source_separate.engine.ensemble import Ensemble, Member
from namespaces.music_source_separate.engine.inference import (
    Precision,
    RunOptions,
    count_chunks,
    counting,
    drive,
    ensemble_steps,
    forward,
    plan_chunks,
    segment_samples,
    separate,
)
from namespaces.music_source_separate.models.layout import load_ensemble

TOLERANCE = 1e-4


def apply_ensemble(ensemble: Ensemble, mix: torch.Tensor, options: RunOptions | None = None,
                   on_chunk: Callable[[], None] | None = None) -> torch.Tensor:
    """`ensemble_steps` run here, in order: what apply_model computes for a batch (no normalisation)."""
    return drive(ensemble_steps(ensemble, mix, options or RunOptions()), counting(forward, on_chunk))


@pytest.fixture(scope="module")
def single(model_store: Path):  # type: ignore[no-untyped-def]
    return load_ensemble(model_store, "htdemucs")


@pytest.fixture(scope="module")
def bag(model_store: Path):  # type: ignore[no-untyped-def]
    return load_ensemble(model_store, "htdemucs_ft")


def lengths(segment: int) -> list[int]:
    """Shorter than a segment, exactly one, several plus a remainder."""
    return [segment // 3, segment, 2 * segment + 1234]


def test_plan_covers_every_sample() -> None:
    chunks = plan_chunks(1000, 400)
    assert [c.offset for c in chunks] == [0, 300, 600, 900]
    assert chunks[-1].length == 100
    covered = set().union(*(range(c.offset, c.offset + c.length) for c in chunks))
    assert covered == set(range(1000))


def test_single_model_matches_demucs(single) -> None:  # type: ignore[no-untyped-def]
    model = single.members[0].model
    torch.manual_seed(1)
    for length in lengths(segment_samples(model)):
        mix = torch.randn(1, 2, length)
        with torch.no_grad():
            reference = apply_model(model, mix, shifts=0, split=True, overlap=0.25)
            ours = apply_ensemble(single, mix)
        assert ours.shape == reference.shape
        assert (ours - reference).abs().max().item() <= TOLERANCE, length


def test_bag_matches_demucs(bag) -> None:  # type: ignore[no-untyped-def]
    reference_bag = BagOfModels([m.model for m in bag.members], [list(m.weights) for m in bag.members])
    torch.manual_seed(2)
    for length in lengths(segment_samples(bag.members[0].model))[::2]:
        mix = torch.randn(1, 2, length)
        with torch.no_grad():
            reference = apply_model(reference_bag, mix, shifts=0, split=True, overlap=0.25)
            ours = apply_ensemble(bag, mix)
        assert (ours - reference).abs().max().item() <= TOLERANCE, length


def test_separate_normalises_and_restores_scale(single) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    mix = torch.randn(2, 44100)
    loud = separate(single, mix * 100)
    quiet = separate(single, mix)
    assert torch.allclose(loud, quiet * 100, rtol=1e-3, atol=1e-3)
    assert torch.isfinite(separate(single, torch.zeros(2, 44100))).all()  # silence: no NaN


def test_chunk_callback_counts_every_chunk(single) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    length = 3 * segment_samples(single.members[0].model)
    separate(single, torch.zeros(2, length), on_chunk=lambda: calls.append(1))
    assert len(calls) == count_chunks(single, length) == 4


def as_ensemble(model: torch.nn.Module) -> Ensemble:
    return Ensemble("m", (Member(model.eval(), (1.0,) * len(model.sources)),), tuple(model.sources),
                    model.samplerate, model.audio_channels)


@pytest.mark.parametrize("shifts", [1])
def test_shift_trick_matches_demucs(single, shifts: int) -> None:  # type: ignore[no-untyped-def]
    """One shift draws its offset before any model call, so seeding `random` the same matches Demucs."""
    mix = torch.randn(1, 2, 3 * 44100)
    random.seed(7)
    with torch.no_grad():
        reference = apply_model(single.members[0].model, mix, shifts=shifts, split=True, overlap=0.25)
    ours = apply_ensemble(single, mix, RunOptions(shifts=shifts, seed=7))
    assert (ours - reference).abs().max().item() <= TOLERANCE


def test_shifts_are_seeded(single) -> None:  # type: ignore[no-untyped-def]
    mix = torch.randn(1, 2, 2 * 44100)
    first, again, other = (apply_ensemble(single, mix, RunOptions(shifts=2, seed=s)) for s in (1, 1, 2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_whole_and_shorter_segment_match_demucs(single) -> None:  # type: ignore[no-untyped-def]
    model = single.members[0].model
    mix = torch.randn(1, 2, 5 * 44100)
    with torch.no_grad():
        whole = apply_model(model, mix, shifts=0, split=False)
        short = apply_model(model, mix, shifts=0, split=True, overlap=0.25, segment=2)
    assert (apply_ensemble(single, mix, RunOptions(split=False)) - whole).abs().max() <= TOLERANCE
    assert (apply_ensemble(single, mix, RunOptions(segment=2)) - short).abs().max() <= TOLERANCE


@pytest.mark.parametrize("shifts", [0, 1, 3])
def test_chunk_count_predicts_calls(single, shifts: int) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []
    options = RunOptions(shifts=shifts, seed=4)
    apply_ensemble(single, torch.zeros(1, 2, 11 * 44100), options, on_chunk=lambda: calls.append(1))
    assert len(calls) == count_chunks(single, 11 * 44100, options)


@pytest.mark.parametrize("build", [
    lambda: HDemucs(sources=list(SOURCES), channels=4, segment=4),  # Demucs's own unit-test size
    lambda: Demucs(sources=list(SOURCES), channels=8, depth=4, segment=4),
    lambda: HDemucs(sources=list(SOURCES) + ["guitar", "piano"], channels=4, segment=4),
], ids=["hdemucs", "demucs", "six-stem"])
def test_other_architectures_match_demucs(build) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(5)
    model = build().eval()
    mix = torch.randn(1, 2, 9 * 44100 + 77)
    with torch.no_grad():
        reference = apply_model(model, mix, shifts=0, split=True, overlap=0.25)
    ours = apply_ensemble(as_ensemble(model), mix)
    assert ours.shape[1] == len(model.sources)
    assert (ours - reference).abs().max().item() <= TOLERANCE


def test_fast_precision_stays_close(single) -> None:  # type: ignore[no-untyped-def]
    mix = torch.randn(2, 3 * 44100)
    exact = separate(single, mix)
    fast = separate(single, mix, RunOptions(precision=Precision.FAST))
    snr = 10 * torch.log10(exact.pow(2).sum() / (exact - fast).pow(2).sum())
    assert snr > 30  # bf16 on the tiny random model; the benchmark measures the real-size one
