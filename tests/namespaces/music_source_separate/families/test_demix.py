"""MSST's inference settings beyond what the equivalence tests cover: `inference.normalize`, the plan of
calls, and the `fast` precision running every family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from namespaces.music_source_separate.engine.inference import Precision, drive
from namespaces.music_source_separate.families.build import build, load_weights
from namespaces.music_source_separate.families.config import Inference, read_config
from namespaces.music_source_separate.families.demix import count_calls, plan

from .tiny import CONFIGS, MEL_BAND_ROFORMER, random_state


def loaded(text: str):  # type: ignore[no-untyped-def]
    model = build(read_config(text.encode()))
    load_weights(model, random_state(text))
    return model.eval()


def test_normalize_scales_the_mix_as_msst_and_the_stems_back() -> None:
    """MSST's normalize_audio: the mono mix's mean and population deviation (float32); stems scaled back."""
    plain = loaded(MEL_BAND_ROFORMER)
    normalizing = loaded(MEL_BAND_ROFORMER.replace("  num_overlap: 2\n", "  num_overlap: 2\n  normalize: true\n"))
    mix = torch.randn(2, 3000, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.05
    mono = mix.numpy().mean(0)
    mean, std = float(mono.mean()), float(mono.std())
    with torch.inference_mode():
        expected = drive(plain.demix_steps((mix - mean) / std, Precision.EXACT)) * std + mean
        got = drive(normalizing.demix_steps(mix, Precision.EXACT))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_silence_is_not_scaled_by_a_zero_deviation() -> None:
    normalizing = loaded(MEL_BAND_ROFORMER.replace("  num_overlap: 2\n", "  num_overlap: 2\n  normalize: true\n"))
    with torch.inference_mode():
        stems = drive(normalizing.demix_steps(torch.zeros(2, 2000), Precision.EXACT))
    assert bool(torch.isfinite(stems).all())


@pytest.mark.parametrize("length", [100, 1280, 1920, 1921, 5000])
def test_the_plan_pads_a_long_mix_and_groups_chunks_into_calls(length: int) -> None:
    settings = Inference(chunk_size=1280, num_overlap=4, batch_size=2, normalize=False)
    layout = plan(length, settings)
    assert layout.border == (960 if length > 1920 else 0)
    starts = [start for call in layout.calls for start in call]
    assert starts == list(range(0, length + 2 * layout.border, 320))
    assert all(len(call) <= 2 for call in layout.calls)
    assert count_calls(length, settings) == len(layout.calls) == -(-len(starts) // 2)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_fast_precision_runs_every_family_close_to_exact(family: str) -> None:
    model = loaded(CONFIGS[family])
    mix = torch.randn(2, 4000, generator=torch.Generator().manual_seed(4)) * 0.3
    with torch.inference_mode():
        exact = drive(model.demix_steps(mix, Precision.EXACT)).numpy()
        fast = drive(model.demix_steps(mix, Precision.FAST)).numpy()
    assert fast.shape == exact.shape and np.isfinite(fast).all()
    snr = 10 * np.log10(np.sum(exact.astype(np.float64) ** 2) / np.sum((exact - fast).astype(np.float64) ** 2 + 1e-30))
    assert snr > 20, snr


def test_the_fast_form_is_made_once_and_leaves_the_checkpoints_state_dict() -> None:
    model = loaded(MEL_BAND_ROFORMER)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fast = model.fast_form()
    assert fast is model.fast_form() and fast is not model
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[key], before[key]) for key in before)
    linears = [module for module in fast.modules() if type(module) is torch.nn.Linear]
    assert linears and all(module.weight.dtype == torch.bfloat16 for module in linears)
