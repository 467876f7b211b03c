"""The stems a request asks for, derived from one separation, and their encoding.

A Demucs model's stems are its sources and `no_<source>`, the mix minus that source (so that
a source and its `no_` form add up to the input exactly, as SAMI's 2track models promise). A SAMI
model's are `vocals` and `no_vocals`, each built as that model's invoke builds its target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..audio.convert import fit_length, resample, to_channels
from ..audio.encode import encode
from ..engine.denoise import denoise
from .sami_models import SamiModel, Target

NO = "no_"  # `no_<source>`: the mix minus that source
VOCALS = "vocals"
SAMI_STEMS = {VOCALS: Target.VOCALS, NO + VOCALS: Target.ACCOMPANIMENT}


def stem_names(sources: Iterable[str]) -> tuple[str, ...]:
    """Every stem a model of these sources gives: each source, then each `no_<source>`."""
    sources = tuple(sources)
    return sources + tuple(NO + source for source in sources)


def source_of(stem: str) -> str:
    """The source a stem is built from: `no_vocals` -> `vocals`."""
    return stem[len(NO):] if stem.startswith(NO) else stem


def sami_stems(model: SamiModel) -> tuple[str, ...]:
    """A SAMI model's own result as a stem name: `vocals` or `no_vocals`."""
    return tuple(stem for stem, target in SAMI_STEMS.items() if target is model.target)


def demucs_stem(stem: str, sources: Mapping[str, np.ndarray], mix: np.ndarray) -> np.ndarray:
    """A source, or the mix minus it (float32, the sources' shape)."""
    source = np.asarray(sources[source_of(stem)], dtype=np.float32)
    return mix - source if stem.startswith(NO) else source


def sami_target(model: SamiModel, target: Target, sources: Mapping[str, np.ndarray], mix: np.ndarray,
                samplerate: int) -> np.ndarray:
    """`target` as the SAMI model `model` builds it from the sources of its Demucs model."""
    vocals = np.asarray(sources[VOCALS], dtype=np.float32)
    if target is Target.VOCALS:
        result = vocals
    elif model.denoise:  # the 4-stem models rebuild the accompaniment from its stems
        result = sum((np.asarray(array, dtype=np.float32) for array in sources.values()),
                     np.zeros_like(vocals)) - vocals
    else:  # so that vocals + accompaniment gives the input back
        result = mix - vocals
    return denoise(result, samplerate) if model.denoise else result


def render(samples: np.ndarray, rate: int, frames: int, out_rate: int, channels: int, fmt: str) -> bytes:
    """Stereo `samples` at `rate` encoded at `out_rate` with `channels`, exactly `frames` long."""
    resampled = resample(np.ascontiguousarray(samples, dtype=np.float32), rate, out_rate)
    return encode(fit_length(to_channels(resampled, channels), frames), out_rate, fmt)
