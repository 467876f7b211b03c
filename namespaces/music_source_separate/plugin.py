"""The MusicSourceSeparate namespace: decode, separate with Demucs, build the target, encode."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from sami_gateway.config import Config, ConfigError
from sami_gateway.namespace import Call, InputBytes, NamespaceStartError, Result, RunReport, release
from sami_gateway.scheduler import Scheduler, lower_thread_priority

from . import native
from .audio.convert import fit_length, output_frames, resample, to_channels, to_stereo
from .audio.decode import decode
from .audio.encode import encode
from .codes import translated
from .denoise import denoise
from .engine import drive, forward
from .params import SeparateParams, parse_params
from .sami_models import Target
from .separator import Separator
from .settings import SETTINGS, SeparationSettings
from .store import Ensemble, ModelStoreError, load_ensemble

log = logging.getLogger(__name__)
NAME = "MusicSourceSeparate"
VOCALS = "vocals"
AUDIO_WORKERS = 2  # decoding/encoding threads, apart from the inference thread
SHIFTS = 0  # Demucs's one random shift averages nothing and makes answers irreproducible
T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """The input as the model wants it, plus what the output must match."""

    mix: np.ndarray  # (2, frames) at the model's rate
    input_frames: int
    input_rate: int
    input_channels: int
    input_format: str


def parse_target(spec: str) -> tuple[str, str | None]:
    """`htdemucs_ft:vocals` -> ("htdemucs_ft", "vocals"); `htdemucs` -> ("htdemucs", None)."""
    name, _, stem = spec.partition(":")
    return name, stem or None


class MusicSourceSeparate:
    """Separates vocals or accompaniment with Demucs models from the store."""

    name = NAME
    needs_input = True

    def __init__(self, settings: SeparationSettings, max_input_bytes: int, request_timeout: float,
                 nice: int = 0) -> None:
        self.max_input_bytes = max_input_bytes
        self._nice = nice
        self._settings = settings
        self._targets = {model: parse_target(spec) for model, spec in settings.model_map.items()}
        self._threads = settings.threads or os.cpu_count() or 1
        self._device = torch.device(settings.device)
        self._ensembles: dict[str, Ensemble] = {}
        self._separators: dict[str, Separator] = {}
        self._load_seconds: dict[str, float] = {}
        self._timeout = request_timeout
        self._audio_pool: ThreadPoolExecutor | None = None
        self._scheduler: Scheduler | None = None

    def parse(self, payload: Mapping[str, Any]) -> SeparateParams:
        return parse_params(payload)

    def load_seconds(self) -> Mapping[str, float]:
        return dict(self._load_seconds)

    async def start(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        native.configure(self._settings.kernel_dir, self._settings.compiler or None)
        if self._device.type == "cpu" and self._settings.retain_freed_memory:
            # Before any model loads, so that every thread shares the one heap (see the function).
            log.info("keeping freed memory for reuse (SAMI_RETAIN_FREED_MEMORY): %s", native.retain_freed_memory())
        self._audio_pool = ThreadPoolExecutor(AUDIO_WORKERS, thread_name_prefix="mss-audio",
                                              initializer=lower_thread_priority, initargs=(self._nice,))
        await self._run(self._audio_pool, self._load_all)

    async def stop(self) -> None:
        if self._audio_pool is not None:
            self._audio_pool.shutdown(wait=True, cancel_futures=True)
        self._ensembles.clear()
        self._separators.clear()

    def _load_all(self) -> None:
        torch.set_num_threads(self._threads)
        loaded: dict[tuple[str, str | None], Ensemble] = {}
        for model, target in self._targets.items():
            if target not in loaded:
                started = time.perf_counter()
                try:
                    loaded[target] = load_ensemble(self._settings.model_dir, *target)
                except ModelStoreError as exc:
                    raise NamespaceStartError(f"{NAME}: {exc}") from exc
                ensemble = loaded[target]
                self._separators[ensemble.name] = Separator(ensemble, str(self._device),
                                                            precision=self._settings.precision)
                self._warm_up(ensemble)
                self._load_seconds[ensemble.name] = time.perf_counter() - started
                log.info("loaded %s for %s in %.2f s", ensemble.name, model, self._load_seconds[ensemble.name])
            if VOCALS not in loaded[target].sources:
                raise NamespaceStartError(f"{NAME}: {loaded[target].name} has no {VOCALS} stem")
            self._ensembles[model] = loaded[target]

    def _warm_up(self, ensemble: Ensemble) -> None:
        """One short run so the first request does not pay for kernel initialisation."""
        separator = self._separators[ensemble.name]
        drive(separator.plan(torch.zeros(ensemble.audio_channels, ensemble.samplerate), shifts=SHIFTS))

    async def _run(self, pool: ThreadPoolExecutor | None, func: Callable[..., T], *args: Any) -> T:
        assert pool is not None, "start() was not awaited"
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    async def run(self, call: Call[SeparateParams]) -> Result:
        started = time.perf_counter()
        params = call.params
        ensemble = self._ensembles[params.model.name]
        prepared = await self._run(self._audio_pool, self._prepare, call.data, params, ensemble)
        assert self._scheduler is not None, "start() was not awaited"
        separator = self._separators[ensemble.name]
        steps = separator.plan(torch.from_numpy(prepared.mix), shifts=SHIFTS)
        cost = prepared.input_frames / prepared.input_rate  # audio-seconds, what admission counts
        submitted = time.perf_counter()
        stems_tensor = await self._scheduler.submit(steps, cost, self._timeout, forward, torch.inference_mode)
        separated = time.perf_counter() - submitted
        source = {"format": prepared.input_format, "sample_rate": prepared.input_rate,
                  "channel": prepared.input_channels, "duration": round(cost, 6)}
        # The audio thread takes the only references to the large arrays, so that they are freed
        # there, not on the event loop when this coroutine ends.
        arrays: list[Any] = [prepared, stems_tensor.cpu().numpy()]
        del prepared, stems_tensor
        data, frames = await self._run(self._audio_pool, self._finish_taking, params, ensemble, arrays)
        out = params.output
        report = RunReport(params.model.name, cost, {"separation": separated, "total": time.perf_counter() - started})
        return Result(data, report=report, payload={
            "model": params.model.name,
            "backend_model": ensemble.name,
            "duration": round(frames / out.sample_rate, 6),
            "sample_rate": out.sample_rate,
            "channel": out.channels,
            "format": out.format,
            "processing_time": round(time.perf_counter() - started, 3),
            "input": source,
        })

    def _finish_taking(self, params: SeparateParams, ensemble: Ensemble, arrays: list[Any]) -> tuple[bytes, int]:
        """`_finish` on the arrays handed over in `arrays`, which this thread then frees."""
        prepared, stems = arrays
        arrays.clear()
        return self._finish(params, ensemble, prepared, stems)

    def _prepare(self, data: InputBytes, params: SeparateParams, ensemble: Ensemble) -> Prepared:
        with translated():
            audio = decode(data, params.hint, self._settings.max_audio_seconds, self._settings.max_input_channels)
            release(data)  # read: its memory goes back now, not when the request ends
            stereo = to_stereo(audio.samples)
            mix = resample(stereo, audio.sample_rate, ensemble.samplerate)
        return Prepared(np.ascontiguousarray(mix, dtype=np.float32), audio.samples.shape[-1],
                        audio.sample_rate, audio.samples.shape[0], audio.format)

    def _finish(self, params: SeparateParams, ensemble: Ensemble, prepared: Prepared,
                stems: np.ndarray) -> tuple[bytes, int]:
        vocals = stems[ensemble.sources.index(VOCALS)]
        if params.model.target is Target.VOCALS:
            target = vocals
        elif params.model.denoise:  # the 4-stem models rebuild the accompaniment from its stems
            target = stems.sum(axis=0) - vocals
        else:  # so that vocals + accompaniment gives the input back
            target = prepared.mix - vocals
        if params.model.denoise:
            target = denoise(target, ensemble.samplerate)
        out = params.output
        with translated():
            frames = output_frames(prepared.input_frames, prepared.input_rate, out.sample_rate)
            resampled = resample(np.ascontiguousarray(target, dtype=np.float32), ensemble.samplerate, out.sample_rate)
            samples = fit_length(to_channels(resampled, out.channels), frames)
            return encode(samples, out.sample_rate, out.format), frames


def create_namespace(config: Config) -> MusicSourceSeparate:
    """The namespace as configured: its own settings section, the core's input size and deadline."""
    settings: SeparationSettings = config.sections[SETTINGS.name]  # its model map names SAMI models only
    try:
        device = torch.device(settings.device)
    except RuntimeError as exc:
        raise ConfigError(f"SAMI_DEVICE: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"SAMI_DEVICE is {settings.device} but torch sees no CUDA device")
    return MusicSourceSeparate(settings, config.max_input_bytes, config.request_timeout, config.worker_nice)
