"""A job's `model`, `stems` and `output`, validated into a dataclass before the job is stored.

Runs on the event loop: the store is asked through `StoreModels`, which lists a directory and
reads a layer's header once, never loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sami_gateway.errors import Code, error

from .codes import model_error
from .params import CODEC_RATES, MAX_OUTPUT_RATE, MIN_OUTPUT_RATE, OutputSpec, _in_range, _integer, _string
from .sami_models import SAMI_MODELS, SamiModel
from .stems import SAMI_STEMS, sami_stems, source_of, stem_names
from .store import ModelStoreError
from .store_models import StoreModels

DEFAULT_JOB_MODEL = "htdemucs"  # Demucs's own default: four stems
JOB_FORMATS = ("wav", "flac", "mp3", "aac")
OUTPUT_KEYS = frozenset({"format", "sample_rate", "channels"})
DEFAULT_JOB_OUTPUT = OutputSpec("wav", 44100, 2)
MAX_STEMS = 64  # more names than any model has stems (six sources and their `no_` forms)


@dataclass(frozen=True)
class JobParams:
    """A job's request: the model as asked and what runs it, the stems in order, the output."""

    model: str  # a Demucs model of the store, or a SAMI model name
    backend: str  # the Demucs model that runs
    only_load: str | None  # the one bag member run alone, if any
    sami: SamiModel | None  # set for a SAMI model name: its stems are built as its invoke does
    stems: tuple[str, ...]
    output: OutputSpec


def _illegal(message: str) -> Exception:
    return error(Code.ILLEGAL_PAYLOAD, message)


def parse_job_output(value: Any) -> OutputSpec:
    """`output`: format, sample rate and channels, each defaulted; other keys refused."""
    if value is None:
        return DEFAULT_JOB_OUTPUT
    if not isinstance(value, Mapping):
        raise _illegal("output must be an object")
    unknown = sorted(set(value) - OUTPUT_KEYS)
    if unknown:  # a misspelt option must not silently fall back to its default
        raise _illegal(f"unknown output fields {unknown}; known: {sorted(OUTPUT_KEYS)}")
    fmt = _string(value, "format", "output.format") or DEFAULT_JOB_OUTPUT.format
    if fmt not in JOB_FORMATS:
        raise _illegal(f"output.format must be one of {', '.join(JOB_FORMATS)}")
    rate = _in_range(_integer(value, "sample_rate", "output.sample_rate"), MIN_OUTPUT_RATE, MAX_OUTPUT_RATE,
                     "output.sample_rate")
    rate = DEFAULT_JOB_OUTPUT.sample_rate if rate is None else rate
    if fmt in ("mp3", "aac") and rate not in CODEC_RATES:
        raise _illegal(f"{fmt} output needs a sample_rate in {sorted(CODEC_RATES)}")
    channels = _in_range(_integer(value, "channels", "output.channels"), 1, 2, "output.channels")
    return OutputSpec(fmt, rate, DEFAULT_JOB_OUTPUT.channels if channels is None else channels)


def _stem_list(value: Any, valid: tuple[str, ...], default: tuple[str, ...], model: str) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list | tuple) or not value or len(value) > MAX_STEMS:
        raise _illegal(f"stems must be a non-empty list of stem names; {model} gives {', '.join(valid)}")
    if not all(isinstance(stem, str) for stem in value):
        raise _illegal("stems must be strings")
    unknown = [stem for stem in value if stem not in valid]
    if unknown:
        raise _illegal(f"unknown stems {unknown}; {model} gives {', '.join(valid)}")
    return tuple(dict.fromkeys(value))  # in the order asked, each once


class JobParser:
    """Parses job requests against the store and the SAMI model map."""

    def __init__(self, store: StoreModels, targets: Mapping[str, tuple[str, str | None]],
                 default_model: str = DEFAULT_JOB_MODEL) -> None:
        self._store = store
        self._default_model = default_model
        self._targets = targets  # SAMI model -> (Demucs model, only_load), as invoke runs them

    def parse(self, request: Mapping[str, Any]) -> JobParams:
        """`model`, `stems` and `output` of `request`; every refusal is 40000022 IllegalPayload."""
        name = request.get("model")
        if name is None or name == "":
            name = self._default_model
        if not isinstance(name, str):
            raise _illegal("model must be a string")
        output = parse_job_output(request.get("output"))
        if name in SAMI_MODELS:
            sami = SAMI_MODELS[name]
            stems = _stem_list(request.get("stems"), tuple(SAMI_STEMS), sami_stems(sami), name)
            backend, only_load = self._targets[name]
            return JobParams(name, backend, only_load, sami, stems, output)
        try:
            info = self._store.describe(name)
            stems = _stem_list(request.get("stems"), stem_names(info.sources), info.sources, name)
            asked = {source_of(stem) for stem in stems}
            only_load = next(iter(asked)) if info.is_bag and len(asked) == 1 and asked <= set(info.specialists) \
                else None
            files = info.layer_files(only_load)
        except ModelStoreError as exc:
            raise model_error(exc) from exc
        if self._store.needs_diffq(name, files):
            raise _illegal(f"model {name!r} is quantized: the gateway needs the diffq package (pip install diffq)")
        return JobParams(name, name, only_load, None, stems, output)


def job_fields(params: JobParams) -> dict[str, Any]:
    """The request as the job object shows it, defaults filled in; `JobParser.parse` of it gives `params`."""
    out = params.output
    return {"model": params.model, "stems": list(params.stems),
            "output": {"format": out.format, "sample_rate": out.sample_rate, "channels": out.channels}}
