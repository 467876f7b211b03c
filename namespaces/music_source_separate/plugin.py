"""The MusicSourceSeparate namespace: invoke's SAMI models and the Jobs API's stems, on Demucs models.

Both go through one pipeline (pipeline.py): decode, stem cache, a leased model on the shared
scheduler. Invoke's audio work has its own threads, jobs theirs (one), so a job's decoding or
encoding never holds up an invoke's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

from sami_gateway.config import Config, ConfigError
from sami_gateway.config.jobs import job_settings
from sami_gateway.runtime.namespace import Call, JobCall, JobOutput, NamespaceStartError, Result, RunReport
from sami_gateway.runtime.scheduler import Scheduler, lower_thread_priority

from .audio.convert import output_frames
from .audio.sniff import AudioHint
from .codes import translated
from .engine import native
from .engine.inference import drive
from .models.families import load_stored
from .models.layout import ModelStoreError, missing_message
from .models.listing import ModelNotInStore, StoreModels
from .models.loaded import LoadedModels
from .pipeline.job_results import JobProgress, write_stems
from .pipeline.on_thread import run_on
from .pipeline.separation import SHIFTS, Lane, ModelKey, Pipeline, Work, invoke_held_bytes
from .pipeline.stem_cache import CacheUse, StemCache, holder_name
from .pipeline.streamed_jobs import StreamedInput, run_streamed, streamable
from .requests.job_params import JobParams, JobParser, job_fields
from .requests.params import SeparateParams, parse_params
from .requests.stems import VOCALS, render, sami_target
from .separator import Separator
from .settings import SETTINGS, SeparationSettings

log = logging.getLogger(__name__)
NAME = "MusicSourceSeparate"
AUDIO_WORKERS = 2  # invoke's decoding/encoding threads, apart from the inference thread
JOB_AUDIO_WORKERS = 1  # the jobs' own: a job's decoding or encoding never takes one of invoke's
JOB_EXTRA_NICE = 5  # steps further below SAMI_WORKER_NICE for jobs' audio thread: invoke's work comes first
STEM_CACHE_DIR = "stem-cache"  # under the Jobs API's data_dir
T = TypeVar("T")


def parse_target(spec: str) -> tuple[str, str | None]:
    """`htdemucs_ft:vocals` -> ("htdemucs_ft", "vocals"); `htdemucs` -> ("htdemucs", None)."""
    name, _, stem = spec.partition(":")
    return name, stem or None


class MusicSourceSeparate:
    """Separates vocals or accompaniment (invoke) and any stems (jobs) with Demucs models from the store."""

    name = NAME
    needs_input = True

    def __init__(self, settings: SeparationSettings, max_input_bytes: int, request_timeout: float,
                 nice: int = 0, data_dir: Path | None = None, job_timeout: float = 3600.0) -> None:
        self.max_input_bytes = max_input_bytes
        self._nice = nice
        self._settings = settings
        self._targets = {model: parse_target(spec) for model, spec in settings.model_map.items()}
        self._threads = settings.threads or os.cpu_count() or 1
        self._device = torch.device(settings.device)
        self._store = StoreModels(settings.model_dir)
        self._jobs = JobParser(self._store, self._targets, settings.job_model)
        self._models: LoadedModels[ModelKey, Separator] = LoadedModels(self._load, settings.max_loaded_models)
        self._load_seconds: dict[str, float] = {}
        self._timeout = request_timeout
        self._job_timeout = job_timeout
        self._cache_dir = (data_dir or job_settings(None).data_dir) / STEM_CACHE_DIR
        self._audio_pool: ThreadPoolExecutor | None = None
        self._job_pool: ThreadPoolExecutor | None = None
        self._pipeline: Pipeline | None = None

    def parse(self, payload: Mapping[str, Any]) -> SeparateParams:
        return parse_params(payload)

    def parse_job(self, request: Mapping[str, Any]) -> JobParams:
        return self._jobs.parse(request)

    def job_fields(self, params: JobParams) -> Mapping[str, Any]:
        return job_fields(params)

    def job_models(self) -> Mapping[str, Any]:
        return self._jobs.models()

    def load_seconds(self) -> Mapping[str, float]:
        return dict(self._load_seconds)

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        native.configure(self._settings.kernel_dir, self._settings.compiler or None)
        self._audio_pool = self._pool(AUDIO_WORKERS, "mss-audio")
        # Jobs' decoding and encoding run further below: they yield a core to invoke's inference.
        self._job_pool = self._pool(JOB_AUDIO_WORKERS, "mss-job-audio", JOB_EXTRA_NICE)
        cache = await run_on(self._audio_pool, StemCache, self._cache_dir, self._settings.stem_cache_bytes)
        self._pipeline = Pipeline(self._store, self._models, cache, scheduler, self._settings)
        await run_on(self._audio_pool, self._load_sami_models)

    def _pool(self, workers: int, name: str, extra_nice: int = 0) -> ThreadPoolExecutor:
        nice = min(19, self._nice + extra_nice) if self._nice else 0
        return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=lower_thread_priority,
                                  initargs=(nice,))

    async def stop(self) -> None:
        for pool in (self._audio_pool, self._job_pool):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)  # the loop goes on
        self._models.clear()

    def _load(self, key: ModelKey) -> Separator:
        """Load a model of the store (on an audio thread: LoadedModels calls it when one is first used)."""
        started = time.perf_counter()
        try:
            ensemble = load_stored(self._settings.model_dir, key.name, key.only_load)
        except ModelStoreError as exc:
            log.error("model %s cannot be loaded: %s", key.label, exc)
            raise
        separator = Separator(ensemble, str(self._device), precision=self._settings.precision)
        log.info("loaded %s in %.2f s", key.label, time.perf_counter() - started)
        return separator

    def _load_sami_models(self) -> None:
        """The SAMI model map's models, loaded and warmed up now so that invoke's first call is warm."""
        torch.set_num_threads(self._threads)
        self._store.catalogue()  # read once here, not on the event loop when a job names a missing model
        targets = list(dict.fromkeys(self._targets.values()))
        for name, only_load in targets:
            started = time.perf_counter()
            try:
                key = ModelKey(name, only_load, self._store.describe(name).layer_files(only_load))
                lease = self._models.acquire(key)
            except ModelNotInStore as exc:
                raise NamespaceStartError(f"{NAME}: {missing_message(name, self._settings.model_dir)}") from exc
            except ModelStoreError as exc:
                raise NamespaceStartError(f"{NAME}: {exc}") from exc
            try:
                if VOCALS not in lease.value.sources:
                    raise NamespaceStartError(f"{NAME}: {key.label} has no {VOCALS} stem")
                drive(lease.value.plan(torch.zeros(2, lease.value.samplerate), shifts=SHIFTS))  # warm-up
            finally:
                self._models.release(lease)
            self._load_seconds[key.label] = time.perf_counter() - started
        if len(targets) > self._models.capacity:
            log.warning("SAMI_MAX_LOADED_MODELS (%d) is below the SAMI model map's %d models: invoke will "
                        "load some of them again", self._models.capacity, len(targets))

    def _lane(self, batch: bool) -> Lane:
        pool = self._job_pool if batch else self._audio_pool
        assert pool is not None, "start() was not awaited"
        return Lane(pool, batch, self._job_timeout if batch else self._timeout)

    # -- invoke ------------------------------------------------------------------------------

    async def run(self, call: Call[SeparateParams]) -> Result:
        started = time.perf_counter()
        params = call.params
        assert self._pipeline is not None, "start() was not awaited"
        backend, only_load = self._targets[params.model.name]
        lane = self._lane(batch=False)
        pipeline, out = self._pipeline, params.output
        work = await pipeline.separate(
            lane, call.data, params.hint, backend, only_load, CacheUse(self._cache_scope(call.appkey)),
            held=lambda work: invoke_held_bytes(work, pipeline.kept_itemsize, out.sample_rate, out.channels))
        try:
            data, frames = await run_on(lane.pool, self._finish, params, work)
        finally:
            work.held.close()  # also when the request ends before `_finish` ran (it clears the rest)
        assert work.info is not None
        info = work.info
        report = RunReport(params.model.name, info.duration,
                           {"separation": work.separation_seconds, "total": time.perf_counter() - started},
                           cache_hit=work.cache_hit, cache_bytes=self._pipeline.cache.total_bytes)
        return Result(data, report=report, payload={
            "model": params.model.name,
            "backend_model": f"{backend}:{only_load}" if only_load else backend,
            "duration": round(frames / out.sample_rate, 6),
            "sample_rate": out.sample_rate,
            "channel": out.channels,
            "format": out.format,
            "processing_time": round(time.perf_counter() - started, 3),
            "input": {"format": info.format, "sample_rate": info.sample_rate, "channel": info.channels,
                      "duration": round(info.duration, 6)},
            "cache_hit": work.cache_hit,
        })

    def _finish(self, params: SeparateParams, work: Work) -> tuple[bytes, int]:
        """The SAMI model's target, encoded; the work's arrays are freed here, on the audio thread."""
        assert work.info is not None and work.mix is not None
        out = params.output
        try:
            with translated():
                target = sami_target(params.model, params.model.target, work.sources, work.mix, work.rate)
                frames = output_frames(work.info.frames, work.info.sample_rate, out.sample_rate)
                return render(target, work.rate, frames, out.sample_rate, out.channels, out.format), frames
        finally:
            work.clear()

    # -- jobs --------------------------------------------------------------------------------

    async def run_job(self, call: JobCall[JobParams]) -> JobOutput:
        started = time.perf_counter()
        params = call.params
        assert self._pipeline is not None, "start() was not awaited"
        lane = self._lane(batch=True)
        progress = JobProgress(call.progress, params.stems)
        with translated():
            streamed = await run_on(lane.pool, self._streamable, call.data, params)
        if streamed is not None and (self._settings.stream_jobs or
                                     streamed.blocks.frames > self._settings.max_audio_seconds * streamed.blocks.rate):
            return await self._run_streamed(call, lane, streamed, progress, started)
        use = CacheUse(self._cache_scope(call.appkey), holder_name(call.appkey, call.job_id))
        work = await self._pipeline.separate(lane, call.data, AudioHint(), params.backend, params.only_load,
                                             use, progress.separated)
        stems = await run_on(lane.pool, write_stems, params, work, call.workdir, progress)
        assert work.info is not None
        info = work.info
        report = RunReport(params.model, info.duration,
                           {"separation": work.separation_seconds, "total": time.perf_counter() - started},
                           cache_hit=work.cache_hit, cache_bytes=self._pipeline.cache.total_bytes)
        source = {"format": info.format, "sample_rate": info.sample_rate, "channels": info.channels,
                  "duration": round(info.duration, 6)}
        return JobOutput(stems, source, report, work.cache_hit)

    def _streamable(self, data: Any, params: JobParams) -> StreamedInput | None:
        """The job's input as blocks when it can stream; never for a model of another family, whose
        own windowing (MSST's) the span-by-span separation does not have: it takes the whole-song path."""
        try:
            if self._store.describe(params.backend).family is not None:
                return None
        except ModelStoreError:
            return None  # the whole-song path says what is wrong with the model
        return streamable(data, params, self._settings)

    async def _run_streamed(self, call: JobCall[JobParams], lane: Lane, streamed: StreamedInput,
                            progress: JobProgress, started: float) -> JobOutput:
        assert self._pipeline is not None
        blocks = streamed.blocks
        use = CacheUse(self._cache_scope(call.appkey), holder_name(call.appkey, call.job_id))
        done = await run_streamed(self._pipeline, lane, call, blocks, progress, self._settings.precision, use)
        duration = blocks.frames / blocks.rate
        report = RunReport(call.params.model, duration,
                           {"separation": done.seconds, "total": time.perf_counter() - started},
                           cache_hit=done.cache_hit, cache_bytes=self._pipeline.cache.total_bytes)
        source = {"format": streamed.format, "sample_rate": blocks.rate, "channels": blocks.channels,
                  "duration": round(duration, 6)}
        return JobOutput(done.stems, source, report, done.cache_hit)

    async def forget_job(self, appkey: str, job_id: str) -> None:
        """The stem cache entries only this job held are deleted (those another job holds stay)."""
        if self._pipeline is None:
            return  # not started (a scale-out front): this process keeps no stems
        removed = await asyncio.to_thread(self._pipeline.cache.forget, holder_name(appkey, job_id))
        if removed:
            log.info("job %s deleted: %d stem cache entries with it", job_id, removed)

    def _cache_scope(self, appkey: str) -> str:
        """The appkey's own stem cache entries, or everyone's with SAMI_STEM_CACHE_SHARED."""
        return "" if self._settings.stem_cache_shared else appkey


def create_namespace(config: Config) -> MusicSourceSeparate:
    """The namespace as configured: its own settings section, the core's input size and deadline, and
    the Jobs API's data folder (the stem cache lives there) and job deadline."""
    settings: SeparationSettings = config.sections[SETTINGS.name]  # its model map names SAMI models only
    try:
        device = torch.device(settings.device)
    except RuntimeError as exc:
        raise ConfigError(f"SAMI_DEVICE: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"SAMI_DEVICE is {settings.device} but torch sees no CUDA device")
    jobs = job_settings(config)
    return MusicSourceSeparate(settings, config.max_input_bytes, config.request_timeout, config.worker_nice,
                               jobs.data_dir, jobs.job_timeout)
