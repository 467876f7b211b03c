"""Our chunked inference against demucs.apply.apply_model on tiny real-architecture models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demucs.apply import BagOfModels, apply_model

from namespaces.music_source_separate.engine import (
    apply_ensemble,
    count_chunks,
    plan_chunks,
    segment_samples,
    separate,
)
from namespaces.music_source_separate.store import load_ensemble

TOLERANCE = 1e-4


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
