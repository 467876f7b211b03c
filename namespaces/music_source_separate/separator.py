"""The Python API Demucs users know: Separator, SeparatedSources, select_model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .audio.convert import resample, to_stereo
from .audio.decode import decode
from .audio.encode import FORMATS, encode
from .audio.sniff import AudioHint
from .engine.ensemble import Ensemble, Member
from .engine.inference import Precision, RunOptions, Steps, count_chunks, separate, separation_steps
from .models.repository import ModelRepository

ProgressCallback = Callable[[str, dict[str, Any]], object]
AudioInput = tuple[Tensor, int] | Path | str | bytes
FILE_SECONDS_LIMIT = 24 * 3600.0  # library use has no SAMI limit; this only bounds a lying header
FILE_CHANNELS_LIMIT = 32  # files of more channels than stereo are downmixed, as Demucs does
FOUR_STEMS = ("drums", "bass", "other", "vocals")
SIX_STEM_ONLY = ("guitar", "piano")


def default_device() -> str:
    """cuda where available, else mps, else cpu."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def _as_ensemble(model: nn.Module) -> Ensemble:
    return Ensemble(type(model).__name__, (Member(model.eval(), (1.0,) * len(model.sources)),),
                    tuple(model.sources), model.samplerate, model.audio_channels)


def load_audio(audio: AudioInput, samplerate: int, channels: int) -> Tensor:
    """Any accepted input as float32 (channels, frames) at the model's rate and channel count."""
    if isinstance(audio, tuple):
        wav, rate = audio
        samples = np.atleast_2d(wav.detach().cpu().float().numpy())
    else:
        data = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
        decoded = decode(data, AudioHint(), FILE_SECONDS_LIMIT, FILE_CHANNELS_LIMIT)
        samples, rate = decoded.samples, decoded.sample_rate
    stereo = to_stereo(samples) if channels == 2 else samples.mean(axis=0, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(resample(stereo, rate, samplerate)))


class SeparatedSources:
    """The stems of one separation, the rate they are at, and the mix they came from."""

    def __init__(self, sources: dict[str, Tensor], sample_rate: int, original: Tensor) -> None:
        self.sources = sources
        self.sample_rate = sample_rate
        self.original = original

    def __getitem__(self, name: str) -> Tensor:
        return self.sources[name]

    def isolate_stem(self, name: str) -> SeparatedSources:
        """`name` and `no_<name>`, the sum of every other stem."""
        if name not in self.sources:
            raise KeyError(f"no stem {name!r}; stems are {sorted(self.sources)}")
        rest = sum((wav for key, wav in self.sources.items() if key != name), torch.zeros_like(self.original))
        return SeparatedSources({name: self.sources[name], f"no_{name}": rest}, self.sample_rate, self.original)

    def export_stem(self, stem_name: str, path: Path | str | None = None, format: str = "wav",
                    clip: str | None = "rescale") -> Path | bytes:
        """Encode one stem; written to `path` (returned) or returned as bytes."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        wav = self.sources[stem_name].detach().cpu().float()
        if clip == "rescale":  # as Demucs: scale down just enough to avoid clipping
            wav = wav / max(1.01 * float(wav.abs().max()), 1.0)
        elif clip == "clamp":
            wav = wav.clamp(-0.99, 0.99)
        elif clip is not None:
            raise ValueError("clip must be 'rescale', 'clamp' or None")
        data = encode(wav.numpy(), self.sample_rate, format)
        if path is None:
            return data
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target


class Separator:
    """A loaded Demucs model or bag, ready to separate audio."""

    def __init__(self, model: str | nn.Module | Ensemble = "htdemucs", device: str | None = None,
                 only_load: str | None = None, *, repository: ModelRepository | None = None,
                 precision: str | Precision = Precision.FAST, seed: int = 0) -> None:
        self.device = torch.device(device or default_device())
        if isinstance(model, str):
            model = (repository or ModelRepository()).get_model(model, only_load=only_load)
        self.model = model if isinstance(model, Ensemble) else _as_ensemble(model)
        for member in self.model.members:
            member.model.to(self.device)
        self.precision = Precision(precision)
        self.seed = seed

    @property
    def samplerate(self) -> int:
        return self.model.samplerate

    @property
    def sources(self) -> tuple[str, ...]:
        return self.model.sources

    def separate(self, audio: AudioInput, shifts: int = 1, split: bool = True, split_size: int | None = None,
                 split_overlap: float = 0.25, progress_callback: ProgressCallback | None = None,
                 use_only_stem: str | None = None) -> SeparatedSources:
        """Separate `audio` into the model's stems at the model's rate."""
        mix = load_audio(audio, self.model.samplerate, self.model.audio_channels).to(self.device)
        options = RunOptions(shifts=shifts, overlap=split_overlap, split=split,
                             segment=None if split_size is None else float(split_size),
                             seed=self.seed, precision=self.precision)
        on_chunk: Callable[[], None] | None = None
        if progress_callback is not None and split:
            total = count_chunks(self.model, mix.shape[-1], options, use_only_stem)
            progress_callback("processing_start", {"total_chunks": total})
            done = [0]

            def on_chunk() -> None:
                done[0] += 1
                progress_callback("chunk_complete", {"completed_chunks": done[0], "total_chunks": total})

        stems = separate(self.model, mix, options, on_chunk, use_only_stem)
        if progress_callback is not None and split:
            progress_callback("processing_complete", {"total_chunks": total})
        return self.sources_of(stems, mix, use_only_stem)

    def sources_of(self, stems: Tensor, mix: Tensor, use_only_stem: str | None = None) -> SeparatedSources:
        """Name the (sources, channels, time) output of `plan`."""
        named = {name: stems[index] for index, name in enumerate(self.model.sources)}
        if use_only_stem is not None and len(self.model.members) > 1:
            named = {use_only_stem: named[use_only_stem]}
        return SeparatedSources(named, self.model.samplerate, mix)

    def plan(self, mix: Tensor, shifts: int = 0, split_overlap: float = 0.25) -> Steps:
        """The model calls that separate `mix` (channels, time at the model's rate), for a scheduler
        to run (`engine.forward` on each, under torch.inference_mode); returns the stems."""
        options = RunOptions(shifts=shifts, overlap=split_overlap, seed=self.seed, precision=self.precision)
        return separation_steps(self.model, mix.to(self.device), options)


def _check_audio(audio: AudioInput) -> None:
    if isinstance(audio, tuple):
        if not isinstance(audio[0], Tensor) or audio[0].numel() == 0 or int(audio[1]) <= 0:
            raise ValueError("audio must be a non-empty tensor and a positive sample rate")
    elif not Path(audio).is_file():
        raise FileNotFoundError(str(audio))


def select_model(audio: AudioInput | Sequence[tuple[Tensor, int] | Path | str],
                 isolate_stem: str | None = None) -> tuple[str, str | None]:
    """A model name and the stem to load alone, for separating `audio`.

    One stem of the four: the fine-tuned bag's specialist for it. Guitar or piano:
    the six-stem model. Otherwise the default four-stem model.
    """
    for item in audio if isinstance(audio, list) else [audio]:
        _check_audio(item)
    if isolate_stem is None:
        return "htdemucs", None
    if isolate_stem in FOUR_STEMS:
        return "htdemucs_ft", isolate_stem
    if isolate_stem in SIX_STEM_ONLY:
        return "htdemucs_6s", None
    raise ValueError(f"no model separates {isolate_stem!r}; stems: {FOUR_STEMS + SIX_STEM_ONLY}")
