"""The four SAMI models of MusicSourceSeparate: what each returns, and the Demucs model behind it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


class Target(Enum):
    """What a SAMI model returns."""

    VOCALS = "vocals"
    ACCOMPANIMENT = "accompaniment"


@dataclass(frozen=True)
class SamiModel:
    """A SAMI model name, its target, whether it denoises, and the Demucs model that serves it by
    default (`name[:stem]`, the stem alone being loaded from a bag; `SAMI_MODEL_MAP` changes it)."""

    name: str
    target: Target
    denoise: bool
    backend: str


SAMI_MODELS = MappingProxyType({m.name: m for m in (
    # The 2track models run only the vocals specialist of the htdemucs_ft bag.
    SamiModel("2track_vocal", Target.VOCALS, denoise=False, backend="htdemucs_ft:vocals"),
    SamiModel("2track_acc", Target.ACCOMPANIMENT, denoise=False, backend="htdemucs_ft:vocals"),
    SamiModel("bs_4track_vocal", Target.VOCALS, denoise=True, backend="htdemucs"),
    SamiModel("bs_4track_acc", Target.ACCOMPANIMENT, denoise=True, backend="htdemucs"),
)})
DESCRIPTIONS = MappingProxyType({  # for listings, which add the Demucs model that runs each
    "2track_vocal": "SAMI's 2-track vocal model: the vocals; no_vocals is the mix minus them",
    "2track_acc": "SAMI's 2-track accompaniment model: the mix minus the vocals",
    "bs_4track_vocal": "SAMI's 4-track vocal model: the vocals, denoised",
    "bs_4track_acc": "SAMI's 4-track accompaniment model: drums, bass and other summed, denoised",
})
DEFAULT_MODEL = "2track_vocal"  # what a payload without `model` gets
