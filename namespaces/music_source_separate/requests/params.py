"""The MusicSourceSeparate payload, validated into a dataclass before any work is done."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sami_gateway.errors import Code, error

from ..audio.decode import INPUT_RATES
from ..audio.sniff import AudioHint
from .sami_models import DEFAULT_MODEL, SAMI_MODELS, SamiModel

OUTPUT_FORMATS = ("wav", "mp3", "aac", "m4a")  # SAMI's three, and m4a: AAC of exact length (`audio.encode.FORMATS`)
MIN_OUTPUT_RATE, MAX_OUTPUT_RATE = 8000, 48000
# Rates the MP3 (MPEG-1/2/2.5) and AAC encoders accept inside 8..48 kHz; WAV takes any.
CODEC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
HINT_FORMATS = frozenset({"wav", "mp3", "aac", "pcm", "flac", "ogg", "m4a", "mp4"})
MAX_HINT_CHANNELS = 32
EXTRA_KEYS = frozenset({"output_format", "output_sample_rate", "output_channel"})


@dataclass(frozen=True)
class OutputSpec:
    format: str = "wav"
    sample_rate: int = 44100
    channels: int = 1


@dataclass(frozen=True)
class SeparateParams:
    model: SamiModel
    hint: AudioHint
    output: OutputSpec


def _object(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise error(Code.ILLEGAL_PAYLOAD, f"{name} must be an object")
    return value


def _integer(section: Mapping[str, Any], key: str, label: str) -> int | None:
    """An integer field; integral floats (44100.0) are accepted, booleans are not."""
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(Code.ILLEGAL_PAYLOAD, f"{label} must be an integer")
    return value


def _in_range(value: int | None, low: int, high: int, label: str) -> int | None:
    if value is not None and not low <= value <= high:
        raise error(Code.ILLEGAL_PAYLOAD, f"{label} must be {low}..{high}")
    return value


def _string(section: Mapping[str, Any], key: str, label: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise error(Code.ILLEGAL_PAYLOAD, f"{label} must be a string")
    return value.lower()


def parse_model(payload: Mapping[str, Any]) -> SamiModel:
    name = payload.get("model", DEFAULT_MODEL)
    if name is None or name == "":
        name = DEFAULT_MODEL
    if not isinstance(name, str) or name not in SAMI_MODELS:
        raise error(Code.ILLEGAL_PAYLOAD, f"model must be one of {', '.join(SAMI_MODELS)}")
    return SAMI_MODELS[name]


def parse_hint(payload: Mapping[str, Any]) -> AudioHint:
    info = _object(payload, "audio_info")
    fmt = _string(info, "format", "audio_info.format")
    if fmt is not None and fmt not in HINT_FORMATS:
        raise error(Code.ILLEGAL_PAYLOAD, f"audio_info.format must be one of {sorted(HINT_FORMATS)}")
    rate = _in_range(_integer(info, "sample_rate", "audio_info.sample_rate"),
                     *INPUT_RATES, "audio_info.sample_rate")
    channels = _in_range(_integer(info, "channel", "audio_info.channel"),
                         1, MAX_HINT_CHANNELS, "audio_info.channel")
    if fmt == "pcm" and (rate is None or channels is None):
        raise error(Code.ILLEGAL_PAYLOAD, "pcm needs audio_info.sample_rate and audio_info.channel")
    return AudioHint(format=fmt, sample_rate=rate, channels=channels)


def parse_output(payload: Mapping[str, Any]) -> OutputSpec:
    extra = _object(payload, "extra")
    unknown = sorted(set(extra) - EXTRA_KEYS)
    if unknown:  # a misspelt option must not silently fall back to its default
        raise error(Code.ILLEGAL_PAYLOAD, f"unknown extra fields {unknown}")
    fmt = _string(extra, "output_format", "extra.output_format") or OutputSpec.format
    if fmt not in OUTPUT_FORMATS:
        raise error(Code.ILLEGAL_PAYLOAD, f"extra.output_format must be one of {', '.join(OUTPUT_FORMATS)}")
    rate = _in_range(_integer(extra, "output_sample_rate", "extra.output_sample_rate"),
                     MIN_OUTPUT_RATE, MAX_OUTPUT_RATE, "extra.output_sample_rate")
    rate = OutputSpec.sample_rate if rate is None else rate
    if fmt != "wav" and rate not in CODEC_RATES:
        raise error(Code.ILLEGAL_PAYLOAD,
                    f"{fmt} output needs a rate in {sorted(CODEC_RATES)}")
    channels = _in_range(_integer(extra, "output_channel", "extra.output_channel"),
                         1, 2, "extra.output_channel")
    return OutputSpec(fmt, rate, OutputSpec.channels if channels is None else channels)


def parse_params(payload: Mapping[str, Any]) -> SeparateParams:
    """Validate the whole payload; every refusal is 40000022 IllegalPayload."""
    return SeparateParams(parse_model(payload), parse_hint(payload), parse_output(payload))
