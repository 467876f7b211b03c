"""A job's `model`, `stems` and `output`, validated into a dataclass before the job is stored, and
the listing of what can be asked for (the models that can run now, their stems, the output options).

The store is asked through `StoreModels`, which lists a directory and reads a layer's header
once, never loading a model: parsing (one model) runs on the event loop; the gateway asks for the
listing (every model) on a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sami_gateway.errors import Code, error
from sami_gateway.runtime.namespace import MAX_JOB_STEMS as MAX_STEMS  # more than any model's stems and `no_` forms

from ..codes import model_error
from ..models.catalogue import describe
from ..models.layout import ModelStoreError
from ..models.listing import ModelInfo, StoreModels
from .params import CODEC_RATES, MAX_OUTPUT_RATE, MIN_OUTPUT_RATE, OutputSpec, _in_range, _integer, _string
from .sami_models import DESCRIPTIONS as SAMI_DESCRIPTIONS
from .sami_models import SAMI_MODELS, SamiModel
from .stems import SAMI_STEMS, VOCALS, sami_stems, source_of, stem_names

DEFAULT_JOB_MODEL = "htdemucs"  # Demucs's own default: four stems
JOB_FORMATS = ("wav", "flac", "mp3", "aac", "m4a")
OUTPUT_KEYS = frozenset({"format", "sample_rate", "channels"})
DEFAULT_JOB_OUTPUT = OutputSpec("wav", 44100, 2)
CODEC_FORMATS = ("mp3", "aac", "m4a")  # their encoders take only CODEC_RATES; wav and flac any rate in range
JOB_CHANNELS = (1, 2)
FAMILY_FIELDS = ("family", "licence", "sample_rate", "chunk_size", "num_overlap")  # listed for imported models


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
    if fmt in CODEC_FORMATS and rate not in CODEC_RATES:
        raise _illegal(f"{fmt} output needs a sample_rate in {sorted(CODEC_RATES)}")
    channels = _in_range(_integer(value, "channels", "output.channels"), JOB_CHANNELS[0], JOB_CHANNELS[-1],
                         "output.channels")
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

    def models(self) -> dict[str, Any]:
        """What `parse` accepts now: `default_model` (None when it cannot run), `models` (the store's
        runnable Demucs models by name, then the SAMI names whose Demucs model can run, the default
        first) and `output` options. Quantized models without diffq are left out: they cannot load.
        One listing of the store answers it all (the SAMI names' models are looked up in it)."""
        listing = self._store.listing()
        listed = [_demucs_entry(info) for info in self._store.models(listing)
                  if info.name not in SAMI_MODELS and _runnable(self._store, info)]
        for sami in SAMI_MODELS.values():
            backend, only_load = self._targets[sami.name]
            try:
                info = self._store.describe(backend, listing)
            except ModelStoreError:
                continue
            if _runnable(self._store, info, only_load) and VOCALS in info.sources:
                listed.append(_sami_entry(sami, f"{backend}:{only_load}" if only_load else backend))
        default = self._default_model if any(m["name"] == self._default_model for m in listed) else None
        listed.sort(key=lambda entry: entry["name"] != default)  # stable: the rest keep their order
        return {"default_model": default, "models": listed, "output": output_options()}


def _runnable(store: StoreModels, info: ModelInfo, only_load: str | None = None) -> bool:
    """Whether every layer a load of `info` (of its `only_load` member) reads is present and loadable."""
    try:
        files = info.layer_files(only_load)
    except ModelStoreError:
        return False
    return not store.needs_diffq(info.name, files)


def _demucs_entry(info: ModelInfo) -> dict[str, Any]:
    if info.family is not None:
        return _family_entry(info)
    layers = len(set(info.signatures))
    return {"name": info.name, "kind": "demucs", "description": describe(info.name, layers, not info.catalogued),
            "sources": list(info.sources), "stems": list(stem_names(info.sources)),
            "default_stems": list(info.sources)}


def _family_entry(info: ModelInfo) -> dict[str, Any]:
    """An imported model of another family, with what a user needs to choose it."""
    assert info.family is not None
    summary = info.family.summary()
    return {"name": info.name, "kind": "family", "description": info.family.description(),
            "sources": list(info.sources), "stems": list(stem_names(info.sources)),
            "default_stems": list(info.sources), **{key: summary[key] for key in FAMILY_FIELDS}}


def _sami_entry(sami: SamiModel, backend: str) -> dict[str, Any]:
    return {"name": sami.name, "kind": "sami", "description": f"{SAMI_DESCRIPTIONS[sami.name]} (runs {backend})",
            "sources": [VOCALS], "stems": list(SAMI_STEMS), "default_stems": list(sami_stems(sami))}


def output_options() -> dict[str, Any]:
    """The `output` a job may ask for, as `parse_job_output` checks it."""
    out = DEFAULT_JOB_OUTPUT
    return {"formats": list(JOB_FORMATS),
            "default": {"format": out.format, "sample_rate": out.sample_rate, "channels": out.channels},
            "sample_rate_range": {"min": MIN_OUTPUT_RATE, "max": MAX_OUTPUT_RATE},
            "sample_rates": {fmt: sorted(CODEC_RATES) for fmt in CODEC_FORMATS},
            "channels": list(JOB_CHANNELS)}


def job_fields(params: JobParams) -> dict[str, Any]:
    """The request as the job object shows it, defaults filled in; `JobParser.parse` of it gives `params`."""
    out = params.output
    return {"model": params.model, "stems": list(params.stems),
            "output": {"format": out.format, "sample_rate": out.sample_rate, "channels": out.channels}}
