"""An MSST YAML config, checked field by field into what building and running a model needs.

MSST builds its models with `Model(**config.model)` (the RoFormers) or from the whole config
(MDX23C), and `demix` reads `audio`, `inference` and `training`; the same fields mean the same
here. A field MSST would not accept, or one this implementation does not run, is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1 << 20  # configs are a few kilobytes; anything larger is not one


class ConfigError(ValueError):
    """The config cannot describe a model this implementation runs; the message names the field."""


class Family(Enum):
    """The model families, by MSST's `model_type`."""

    BS_ROFORMER = "bs_roformer"
    MEL_BAND_ROFORMER = "mel_band_roformer"
    MDX23C = "mdx23c"
    SCNET = "scnet"


@dataclass(frozen=True)
class Inference:
    """How MSST's `demix` runs the model over a file."""

    chunk_size: int  # samples per model call
    num_overlap: int  # each sample is covered by this many chunks (step = chunk_size // num_overlap)
    batch_size: int  # chunks per model call
    normalize: bool  # the mix scaled to zero mean, unit deviation first, the stems scaled back


@dataclass(frozen=True)
class ModelConfig:
    """A config as checked: the family, the model's own fields, the stems and how inference runs."""

    family: Family
    instruments: tuple[str, ...]  # training.instruments: what the network was trained on
    target: str | None  # training.target_instrument: the one stem returned, if set
    sample_rate: int
    inference: Inference
    model: Mapping[str, Any]  # the `model` section, for the family's builder
    audio: Mapping[str, Any] = field(default_factory=dict)  # the `audio` section (MDX23C reads its STFT here)

    @property
    def sources(self) -> tuple[str, ...]:
        """The stems the model returns: the target alone, or every instrument."""
        return (self.target,) if self.target else self.instruments


class _Loader(yaml.SafeLoader):
    """YAML as MSST's configs write it: safe, plus `!!python/tuple` (the RoFormers' band lists)."""


_Loader.add_constructor("tag:yaml.org,2002:python/tuple",
                        lambda loader, node: tuple(loader.construct_sequence(node)))  # type: ignore[arg-type]


def read_config(data: bytes, family: str | None = None) -> ModelConfig:
    """Parse and check a config (`family` overrides `training.model_type` and the guess from fields)."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.load(data, Loader=_Loader)  # noqa: S506 - a SafeLoader with one extra tag
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config is not YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError("the config must be a mapping with `audio`, `model`, `training` and `inference`")
    audio, model, training, inference = (_section(raw, name) for name in ("audio", "model", "training", "inference"))
    kind = _family(family or training.get("model_type"), model)
    instruments = _instruments(training)
    target = training.get("target_instrument") or None
    if target is not None and target not in instruments:
        raise ConfigError(f"training.target_instrument {target!r} is not one of training.instruments {instruments}")
    chunk = _positive(inference, "chunk_size", "inference") if "chunk_size" in inference \
        else _positive(audio, "chunk_size", "audio")
    overlap = _positive(inference, "num_overlap", "inference")
    if overlap > chunk:
        raise ConfigError(f"inference.num_overlap {overlap} exceeds the chunk size {chunk}")
    batch = _positive(inference, "batch_size", "inference", default=1)
    normalize = inference.get("normalize", False)
    if not isinstance(normalize, bool):
        raise ConfigError(f"inference.normalize must be true or false, not {normalize!r}")
    rate = _positive(audio, "sample_rate", "audio", default=44100)
    channels = audio.get("num_channels", 2)
    if channels != 2:
        raise ConfigError(f"audio.num_channels is {channels!r}: only stereo models are served")
    return ModelConfig(kind, instruments, target, rate, Inference(chunk, overlap, batch, normalize),
                       dict(model), dict(audio))


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = raw.get(name)
    if not isinstance(section, Mapping):
        raise ConfigError(f"the config has no `{name}` section")
    return section


def _family(value: Any, model: Mapping[str, Any]) -> Family:
    if value is None:  # MSST takes it from the command line: guess from the fields each family has
        if "freqs_per_bands" in model:
            return Family.BS_ROFORMER
        if "num_bands" in model:
            return Family.MEL_BAND_ROFORMER
        if "num_subbands" in model:
            return Family.MDX23C
        if "band_SR" in model:
            return Family.SCNET
        raise ConfigError("cannot tell the model type: give training.model_type (bs_roformer, "
                          "mel_band_roformer, mdx23c or scnet), or model.freqs_per_bands / num_bands / "
                          "num_subbands / band_SR")
    try:
        return Family(value)
    except ValueError:
        known = ", ".join(family.value for family in Family)
        raise ConfigError(f"training.model_type {value!r} is not supported (supported: {known})") from None


def _instruments(training: Mapping[str, Any]) -> tuple[str, ...]:
    instruments = training.get("instruments")
    if not isinstance(instruments, list | tuple) or not instruments \
            or not all(isinstance(name, str) and name for name in instruments):
        raise ConfigError("training.instruments must be a non-empty list of stem names")
    if len(set(instruments)) != len(instruments):
        raise ConfigError(f"training.instruments names a stem twice: {list(instruments)}")
    if any(name.startswith("no_") for name in instruments):
        raise ConfigError("training.instruments: a stem named no_<stem> would clash with the mix minus <stem>")
    return tuple(instruments)


def _positive(section: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{key} must be a positive integer, not {value!r}")
    return value


def model_fields(config: ModelConfig, defaults: Mapping[str, Any], ignored: frozenset[str],
                 refused: Mapping[str, Any]) -> dict[str, Any]:
    """The `model` section over the family's defaults: unknown fields refused (MSST's constructor
    would refuse them too), training-only ones dropped, unsupported settings refused by name."""
    unknown = sorted(set(config.model) - set(defaults) - ignored - set(refused))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not a field of {config.family.value} "
                          f"(unknown: {', '.join(unknown)})")
    for key, allowed in refused.items():
        if key in config.model and config.model[key] != allowed:
            raise ConfigError(f"model.{key} = {config.model[key]!r} is not supported (only {allowed!r})")
    return {key: config.model.get(key, default) for key, default in defaults.items()}
