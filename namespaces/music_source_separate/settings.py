"""MusicSourceSeparate's settings: the model map and store, device, precision, and the audio it takes.

Read by the gateway's configuration from the same sources as the core's (`SAMI_MODEL_DIR`, ...,
the TOML file's top level or its `[music_source_separate]` table) and handed to the namespace
as a `SeparationSettings`; the separation library never reads them itself.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sami_gateway.config.settings import (
    Section,
    Setting,
    boolean,
    bounded_int,
    choice,
    positive,
    split,
    url,
    user_cache_dir,
)

from .defaults import DEFAULT_KERNEL_DIR, DEFAULT_MODEL_DIR, OFFICIAL_MODEL_URL
from .requests.sami_models import SAMI_MODELS

MAX_INPUT_CHANNELS = 32  # more than stereo is downmixed; this bounds memory per second of audio
MAX_LOADED_MODELS = 64  # a bound above any store's count of models, so a typo cannot mean "unbounded"
DEFAULT_MODEL_MAP = MappingProxyType({model.name: model.backend for model in SAMI_MODELS.values()})


@dataclass(frozen=True)
class SeparationSettings:
    """What the namespace and its commands read from the configuration."""

    model_dir: Path = DEFAULT_MODEL_DIR
    model_url: str = OFFICIAL_MODEL_URL
    model_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_MODEL_MAP)
    device: str = "cpu"
    precision: str = "fast"
    threads: int = 0
    max_audio_seconds: float = 600.0
    max_job_seconds: float = 4 * 3600.0
    max_input_channels: int = 2
    kernel_dir: Path = DEFAULT_KERNEL_DIR
    compiler: tuple[str, ...] = ()
    max_loaded_models: int = 3
    job_model: str = "htdemucs"
    stem_cache_bytes: int = 2 * 1024 ** 3
    stem_cache_shared: bool = False
    stream_jobs: bool = False


def _model_map(value: Any) -> Mapping[str, str]:
    """`2track_vocal=htdemucs_ft:vocals,...` or a TOML table; unnamed models keep their default."""
    pairs = dict(value) if isinstance(value, dict) else dict(item.split("=", 1) for item in split(value))
    merged = dict(DEFAULT_MODEL_MAP)
    for key, target in pairs.items():
        if key not in SAMI_MODELS or not isinstance(target, str) or not target:
            raise ValueError(f"unknown SAMI model {key!r} or empty target")
        merged[key] = target
    return MappingProxyType(merged)


def _model_name(value: Any) -> str:
    text = str(value).strip()
    if not text or not all(c.isalnum() or c in "_-." for c in text):
        raise ValueError("must be a model name")
    return text


def _device(value: Any) -> str:
    text = str(value)
    if text != "cpu" and not text.startswith("cuda"):
        raise ValueError("must be cpu or cuda[:N]")
    return text


def _byte_count(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 (off) or a number of bytes")
    return number


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    """The platform's user cache directory, as Demucs users expect it."""
    cache = user_cache_dir(environ)
    return {"model_dir": cache / "models", "kernel_dir": cache / "native"}


SETTINGS = Section("music_source_separate", (
    Setting("model_dir", lambda v: Path(v).expanduser(), "model store in Demucs's layout"),
    Setting("model_url", url, "where `sami-gateway models fetch` downloads layers (Demucs's official root)"),
    Setting("model_map", _model_map, "SAMI model to Demucs model[:only_stem], e.g. `2track_vocal=htdemucs_ft:vocals`"),
    Setting("device", _device, "torch device for inference"),
    Setting("precision", choice("exact", "fast"),
            "inference precision: `exact` (fp32) or `fast` (bf16/fp16 where supported)"),
    Setting("threads", lambda v: max(0, int(v)), "torch threads for inference (0: one per core)"),
    Setting("max_audio_seconds", positive(float),
            "longest audio accepted, in seconds (SAMI: 10 minutes); jobs that stream may be longer"),
    Setting("max_job_seconds", positive(float),
            "longest audio a job accepts when it is separated span by span (wav, flac, mp3, aac, m4a or ogg "
            "input; wav, flac, mp3, aac or m4a output), "
            "in seconds; any other job keeps max_audio_seconds"),
    Setting("max_input_channels", bounded_int(1, MAX_INPUT_CHANNELS),
            f"input channels accepted (SAMI: mono or stereo); up to {MAX_INPUT_CHANNELS}, downmixed to stereo"),
    Setting("kernel_dir", lambda v: Path(v).expanduser(), "where the native attention kernel is built and cached"),
    Setting("compiler", lambda v: tuple(shlex.split(str(v))),
            "C compiler for the native kernel, with its arguments (default: cc or gcc on PATH)", "cc",
            variable="CC"),
    Setting("job_model", _model_name, "the model of a job that names none (a Demucs model of the store or a SAMI "
            "model name)"),
    Setting("max_loaded_models", bounded_int(1, MAX_LOADED_MODELS),
            "models kept loaded at once (loaded on first use, least recently used unloaded first; "
            "the SAMI model map's load at start)"),
    Setting("stem_cache_bytes", _byte_count,
            "disk bytes of separated stems kept under the jobs' data_dir/stem-cache, reused by invoke and "
            "jobs on the same input and model (0: off)"),
    Setting("stem_cache_shared", boolean,
            "one stem cache for every appkey instead of one per appkey: faster, but an appkey's `cache_hit` "
            "then reveals that another appkey processed the same song with the same model"),
    Setting("stream_jobs", boolean,
            "separate every job span by span (wav, flac, mp3, aac, m4a or ogg in; wav, flac, mp3, aac or m4a "
            "out), each stem written as it is final, without the whole song in memory, reading and filling "
            "the stem cache span by span (docs: streaming.md); such jobs longer than max_audio_seconds always are"),
), SeparationSettings, _defaults)
