"""Jobs of wav, flac, mp3, aac, m4a or ogg input and wav, flac or mp3 output separated span by span: the
input read in blocks (wav and flac of known length by libsndfile, any other decoded packet by packet after a
first pass counts its frames), each stem file written as its regions are final, no whole-song array held.
Such a job neither reads nor fills the stem cache. Every job longer than `SAMI_MAX_AUDIO_SECONDS` that can
stream does (up to `SAMI_MAX_JOB_SECONDS`), and with `SAMI_STREAM_JOBS` every one. Any other job, and a wav
or flac whose header is unreadable or past the channel limit, takes the whole-song path, which answers as it
always has."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from sami_gateway.runtime.namespace import InputBytes, JobCall, StemFile

from ..audio.convert import output_frames
from ..audio.decode import length_known
from ..audio.errors import AudioError, AudioErrorKind
from ..audio.sniff import DEMUXERS, AudioHint, probe_duration, sniff
from ..engine.inference import RunOptions, forward
from ..requests.job_params import JobParams
from ..requests.stems import VOCALS
from ..settings import SeparationSettings
from ..streaming.blocks import BlockSource, DecodedBlocks, FileBlocks
from ..streaming.encode import streams_out
from ..streaming.files import FileJob, Output, StemTarget, file_steps
from .job_results import JobProgress
from .separation import CACHE_DTYPES, SHIFTS, Lane, Pipeline

T = TypeVar("T")
HEADER_FORMATS = ("wav", "flac")  # read as they are by libsndfile (FileBlocks) where the header gives the length


def sniff_format(data: InputBytes) -> str:
    """The input's format by its magic bytes, as the whole-song path names it (a few bytes read in place,
    past any ID3v2 tags)."""
    return sniff(data) or ""  # type: ignore[arg-type]  # a memory map slices as bytes do


@dataclass(frozen=True)
class StreamedInput:
    """A job's input as blocks read in place, and its format as the whole-song path names it."""

    blocks: BlockSource
    format: str


def streamable(data: InputBytes, params: JobParams, settings: SeparationSettings) -> StreamedInput | None:
    """The input as blocks (read in place, not copied) when the job can stream: wav, flac, mp3, aac, m4a or
    ogg in, wav, flac or mp3 out, within the channel limit and `max_job_seconds`; None otherwise.

    wav and flac whose header gives their length are read by libsndfile as they are. Other input is
    decoded once to count its frames (`DecodedBlocks`, refusing what decode refuses) where it may stream:
    with `stream_jobs`, or where its header does not show it within `max_audio_seconds`."""
    fmt = sniff_format(data)
    if not streams_out(params.output.format) or fmt not in DEMUXERS:
        return None
    if fmt in HEADER_FORMATS:
        try:
            blocks = FileBlocks(data)
        except RuntimeError:  # soundfile's errors: the whole-song path says what is wrong
            return None
        if length_known(blocks.frames, fmt):
            return _within(blocks, fmt, settings)
    seconds = probe_duration(data, fmt, AudioHint())  # type: ignore[arg-type]
    if not settings.stream_jobs and seconds is not None and seconds <= settings.max_audio_seconds:
        return None  # the whole-song path takes it: no first pass spent on it
    decoded = DecodedBlocks(data, settings.max_job_seconds, settings.max_input_channels)
    return StreamedInput(decoded, decoded.format)


def _within(blocks: FileBlocks, fmt: str, settings: SeparationSettings) -> StreamedInput | None:
    """wav or flac blocks whose header is within the limits; refused past `max_job_seconds`."""
    if blocks.frames > settings.max_job_seconds * blocks.rate:
        raise AudioError(AudioErrorKind.TOO_LONG, f"audio lasts {blocks.frames / blocks.rate:.1f} s, the limit "
                         f"of a job is {settings.max_job_seconds:g} s")
    if blocks.frames == 0 or blocks.channels > settings.max_input_channels:
        return None
    return StreamedInput(blocks, fmt)


def targets(params: JobParams, workdir: Path) -> list[StemTarget]:
    """Each stem's file, built as the whole-song path builds it (`job_results`, `stems.sami_target`)."""
    found = []
    for stem in params.stems:
        path = workdir / f"{stem}.{params.output.format}"
        if params.sami is None or stem == VOCALS:
            found.append(StemTarget(stem, path, denoise=params.sami is not None and params.sami.denoise))
        else:  # the accompaniment: the other sources summed (4-stem, denoised), or the mix minus the vocals
            found.append(StemTarget(stem, path, from_sources=params.sami.denoise, denoise=params.sami.denoise))
    return found


async def run_streamed(pipeline: Pipeline, lane: Lane, call: JobCall[JobParams], blocks: BlockSource,
                       progress: JobProgress, precision: str) -> tuple[dict[str, StemFile], float]:
    """The job's stem files and the seconds its separation took."""
    params = call.params
    key = await _run(lane.pool, pipeline.model_key, params.backend, params.only_load)
    leasing = lane.pool.submit(pipeline.models.acquire, key)
    try:
        lease = await asyncio.wrap_future(leasing)
    except asyncio.CancelledError:  # the lease may still be taken on its thread: it ends once it is
        leasing.add_done_callback(lambda done: _give_back(lane.pool, pipeline, done.result()))
        raise
    try:
        separator = lease.value
        output = Output(params.output.format, params.output.sample_rate, params.output.channels)
        job = FileJob(separator.model, blocks, targets(params, call.workdir), output,
                      RunOptions(shifts=SHIFTS, seed=separator.seed, precision=separator.precision),
                      kept_as=CACHE_DTYPES[precision], spool_dir=call.workdir)
        for target in job.targets:  # each file is written front to back, its wav header final from the start
            call.growing(target.stem, Path(str(target.target)))
        model_frames = output_frames(blocks.frames, blocks.rate, separator.samplerate)
        live = [target.stem for target in job.targets if not target.denoise]  # denoised ones come at the end

        def separated(done: int) -> None:
            seconds = done / separator.samplerate
            progress.separated(done / model_frames, dict.fromkeys(live, seconds))
        steps = file_steps(job, separated)
        started = time.perf_counter()
        await pipeline.scheduler.submit(steps, blocks.frames / blocks.rate, lane.timeout, forward,
                                        torch.inference_mode, batch=True)
        seconds = time.perf_counter() - started
    finally:
        _give_back(lane.pool, pipeline, lease)
    stems = {}
    for target in job.targets:
        stems[target.stem] = StemFile(Path(str(target.target)), output.format, job.frames / output.sample_rate)
        progress.file_written(target.stem, job.frames / output.sample_rate)
    return stems, seconds


def _give_back(pool: ThreadPoolExecutor, pipeline: Pipeline, lease: Any) -> None:
    """End the lease on an audio thread (here once the pool stopped), as the pipeline does."""
    try:
        pool.submit(pipeline.models.release, lease)
    except RuntimeError:
        pipeline.models.release(lease)


async def _run(pool: ThreadPoolExecutor, func: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

