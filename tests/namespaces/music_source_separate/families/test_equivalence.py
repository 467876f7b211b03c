"""Our families and MSST inference against ZFTurbo's `msst` package, on random weights of tiny configs:
shorter than one chunk, exactly one chunk, several chunks and a remainder."""

from __future__ import annotations

import warnings

import pytest
import torch
import yaml

from namespaces.music_source_separate.engine.inference import Precision, drive
from namespaces.music_source_separate.families.build import build, load_weights
from namespaces.music_source_separate.families.config import read_config
from namespaces.music_source_separate.families.mel_bands import mel_filters

from .tiny import CONFIGS, random_state

msst_roformers = pytest.importorskip("msst.models.bs_roformer")
msst_mdx23c = pytest.importorskip("msst.models.mdx23c_tfc_tdf_v3")
msst_scnet = pytest.importorskip("msst.models.scnet")
msst_model_utils = pytest.importorskip("msst.utils.model_utils")
ConfigDict = pytest.importorskip("ml_collections").ConfigDict

TOLERANCE = 1e-4


def lengths(chunk: int) -> dict[str, int]:
    return {"shorter": chunk * 3 // 4, "one chunk": chunk, "several": 3 * chunk + chunk // 3 + 7}


def reference(family: str, text: str, state: dict[str, torch.Tensor]) -> tuple[object, torch.nn.Module]:
    config = ConfigDict(yaml.load(text, Loader=yaml.FullLoader))
    # As MSST's build_model_from_config builds them (that module also needs omegaconf, for Demucs).
    if family == "mdx23c":
        model = msst_mdx23c.TFC_TDF_net(config)
    elif family == "scnet":
        model = msst_scnet.SCNet(**config.model)
    else:
        cls = msst_roformers.BSRoformer if family == "bs_roformer" else msst_roformers.MelBandRoformer
        model = cls(**dict(config.model))
    model.load_state_dict(state)
    return config, model.eval()


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_same_stems_as_msst_demix(family: str) -> None:
    text = CONFIGS[family]
    state = random_state(text)
    ours_config = read_config(text.encode())
    ours = build(ours_config)
    load_weights(ours, state)
    ours.eval()
    config, theirs = reference(family, text, state)
    generator = torch.Generator().manual_seed(1)
    for case, length in lengths(ours_config.inference.chunk_size).items():
        mix = torch.randn(2, length, generator=generator) * 0.3
        with warnings.catch_warnings():  # MSST's SCNet calls torch.stft without a window (ours passes ones)
            warnings.simplefilter("ignore", UserWarning)
            expected = msst_model_utils.demix(config, theirs, mix.numpy(), torch.device("cpu"), family)
        with torch.inference_mode():
            stems = drive(ours.demix_steps(mix, Precision.EXACT))
        assert list(expected) == list(ours.sources)
        for index, name in enumerate(ours.sources):
            got = stems[index].numpy()
            assert got.shape == expected[name].shape, (family, case)
            diff = float(abs(got - expected[name]).max())
            print(f"{family} {case} ({length} samples) {name}: max abs diff {diff:.2e}")
            assert diff <= TOLERANCE, (family, case, diff)


@pytest.mark.parametrize("rate, n_fft, bands", [(44100, 2048, 60), (44100, 128, 8), (48000, 4096, 128)])
def test_mel_bands_as_librosa(rate: int, n_fft: int, bands: int) -> None:
    librosa_filters = pytest.importorskip("librosa.filters")
    expected = librosa_filters.mel(sr=rate, n_fft=n_fft, n_mels=bands)
    assert ((mel_filters(rate, n_fft, bands) > 0) == (expected > 0)).all()
