"""Stems from one separation: names, a source and the mix minus it, the SAMI targets."""

from __future__ import annotations

import numpy as np

from namespaces.music_source_separate.requests.sami_models import SAMI_MODELS, Target
from namespaces.music_source_separate.requests.stems import demucs_stem, sami_stems, sami_target, source_of, stem_names

RNG = np.random.default_rng(0)
MIX = RNG.standard_normal((2, 64)).astype(np.float32)
SOURCES = {name: RNG.standard_normal((2, 64)).astype(np.float16) for name in ("drums", "vocals")}


def test_names() -> None:
    assert stem_names(("drums", "vocals")) == ("drums", "vocals", "no_drums", "no_vocals")
    assert (source_of("no_vocals"), source_of("vocals")) == ("vocals", "vocals")
    assert [sami_stems(model) for model in SAMI_MODELS.values()] == [("vocals",), ("no_vocals",)] * 2


def test_a_source_and_its_no_form_add_up_to_the_mix() -> None:
    vocals, rest = demucs_stem("vocals", SOURCES, MIX), demucs_stem("no_vocals", SOURCES, MIX)
    assert vocals.dtype == rest.dtype == np.float32
    np.testing.assert_array_equal(vocals, SOURCES["vocals"].astype(np.float32))
    np.testing.assert_allclose(vocals + rest, MIX, atol=1e-6)


def test_sami_targets() -> None:
    two_track, four_track = SAMI_MODELS["2track_acc"], SAMI_MODELS["bs_4track_acc"]
    np.testing.assert_array_equal(sami_target(two_track, Target.ACCOMPANIMENT, SOURCES, MIX, 44100),
                                  MIX - SOURCES["vocals"].astype(np.float32))
    accompaniment = sami_target(four_track, Target.ACCOMPANIMENT, SOURCES, np.zeros_like(MIX), 44100)
    assert accompaniment.shape == MIX.shape  # from the stems (the mix is not used), then denoised
    assert not np.allclose(accompaniment, 0)
