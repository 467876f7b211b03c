"""Jobs of wav, flac, mp3, aac, m4a or ogg input and wav, flac, mp3, aac or m4a output separated span by
span: the input read in blocks (wav and flac of known length by libsndfile, any other decoded packet by
packet after a first pass counts its frames), each stem file written as its regions are final, no
whole-song array held. Such a job reads and fills the stem cache span by span (the whole-song path's
entries), and waits for the same song being separated (single flight). Every job longer than
`SAMI_MAX_AUDIO_SECONDS` that can stream does (up to `SAMI_MAX_JOB_SECONDS`), and with `SAMI_STREAM_JOBS`
every one. Any other job, and a wav or flac whose header is unreadable or past the channel limit, takes
the whole-song path, which answers as it always has. Each stem is readable while it is written
(`JobCall.growing`) but an m4a, whose index comes at its end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from sami_gateway.runtime.namespace import InputBytes, JobCall, StemFile

from ..audio.convert import output_frames
from ..audio.decode import length_known
from ..audio.errors import AudioError, AudioErrorKind
from ..audio.sniff import DEMUXERS, AudioHint, probe_duration, sniff
from ..engine.ensemble import Ensemble
from ..engine.inference import RunOptions, forward
from ..requests.job_params import JobParams
from ..requests.stems import VOCALS
from ..settings import SeparationSettings
from ..streaming.blocks import BlockSource, DecodedBlocks, FileBlocks
from ..streaming.encode import streams_out
from ..streaming.files import FileJob, KeptSources, Output, StemTarget, file_steps
from ..streaming.separation import DEMUCS, Region, run_steps
from .job_results import JobProgress
from .on_thread import run_on, run_owned, soon_on
from .separation import CACHE_DTYPES, SHIFTS, Landed, Lane, ModelKey, Pipeline, estimated_sources
from .source_files import SourceFiles
from .stem_cache import CacheUse, Draft, input_sha256

log = logging.getLogger(__name__)
T = TypeVar("T")
UNREADABLE_WHILE_WRITTEN = ("m4a",)  # its index (moov) and edit list come at the end: served once finished
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
    ogg in, wav, flac, mp3, aac or m4a out, within the channel limit and `max_job_seconds`; None otherwise.

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


@dataclass(frozen=True)
class Streamed:
    """A streamed job's stem files, the seconds its separation took (or its reading of the stem cache's
    entry) and whether its sources came from that entry."""

    stems: dict[str, StemFile]
    seconds: float
    cache_hit: bool


async def run_streamed(pipeline: Pipeline, lane: Lane, call: JobCall[JobParams], blocks: BlockSource,
                       progress: JobProgress, precision: str, use: CacheUse) -> Streamed:
    """The job's stem files, built from the stem cache's entry of `use.scope` if it has one (or once the
    same entry, being separated for another job, is kept), else separated and kept in the cache."""
    params = call.params
    key = await run_on(lane.pool, pipeline.model_key, params.backend, params.only_load)
    digest = await run_on(lane.pool, input_sha256, call.data) if pipeline.cache.enabled else ""
    entry = pipeline.entry_key(digest, key, use.scope) if digest else None
    if entry is not None:
        kept = await pipeline.after_flights(lane, entry, lambda: pipeline.cache.open(entry, use.holder),
                                            lambda found: found.files.close())
        if kept is not None:
            names, rate = kept.files.names, kept.samplerate
            job = _file_job(call, blocks, KeptSources(names, rate, lambda: _regions(kept.files)), precision)
            started = time.perf_counter()
            building = lane.pool.submit(_build, job, kept.files, _separated(call, job, progress, rate))
            try:
                await asyncio.wrap_future(building)
            except asyncio.CancelledError:
                if building.cancel():  # never begun, so its files are closed here
                    kept.files.close()
                raise
            return Streamed(_stem_files(job, progress), time.perf_counter() - started, True)
    flight = pipeline.take_off(lane, entry)
    try:
        seconds, job, landed = await _separate(pipeline, lane, call, blocks, progress, precision, key, entry,
                                               use.holder, lambda: pipeline.land(flight, None))
    except BaseException:
        pipeline.land(flight, None)
        raise
    pipeline.land(flight, landed)
    return Streamed(_stem_files(job, progress), seconds, False)


async def _separate(pipeline: Pipeline, lane: Lane, call: JobCall[JobParams], blocks: BlockSource,
                    progress: JobProgress, precision: str, key: ModelKey, entry: str | None,
                    holder: str | None, unkept: Callable[[], None]) -> tuple[float, FileJob, Landed | None]:
    """The job's files written as the model separates its input, its sources written into a new cache
    entry `entry` held by `holder` (none without an entry): the seconds it took, the job, and what its
    waiters take (None: no entry kept). `unkept` hears at once that no entry will be (larger than the
    cache, or the cache off), so that the job's waiters separate the song themselves without waiting."""
    release = pipeline.models.release  # on an audio thread, as the pipeline ends its leases
    lease = await run_owned(lane.pool, lambda taken: soon_on(lane.pool, release, taken), pipeline.models.acquire, key)
    draft = None
    try:
        separator = lease.value
        job = _file_job(call, blocks, separator.model, precision,
                        RunOptions(shifts=SHIFTS, seed=separator.seed, precision=separator.precision))
        layout = estimated_sources(separator.model)
        if entry is not None:
            shape = (2, output_frames(blocks.frames, blocks.rate, separator.samplerate))
            draft = await run_owned(lane.pool, lambda begun: soon_on(lane.pool, begun.discard), pipeline.cache.begin,
                                    entry, [name for name, _ in layout], shape, CACHE_DTYPES[precision],
                                    separator.samplerate, holder)
        if draft is None:
            unkept()
        steps = file_steps(job, _separated(call, job, progress, separator.samplerate),
                           None if draft is None else _keeping(draft, [row for _, row in layout]))
        started = time.perf_counter()
        await pipeline.scheduler.submit(steps, blocks.frames / blocks.rate, lane.timeout, forward,
                                        torch.inference_mode, batch=True)
        seconds = time.perf_counter() - started
        kept = draft is not None and await run_on(lane.pool, draft.commit)
    except BaseException as exc:
        if draft is not None and isinstance(exc, Exception):  # gone before the job's failure is told
            await run_on(lane.pool, draft.discard)
        elif draft is not None:  # cancelled: gone soon
            soon_on(lane.pool, draft.discard)
        raise
    finally:
        soon_on(lane.pool, release, lease)
    return seconds, job, Landed({}, separator.samplerate) if kept else None


def _file_job(call: JobCall[JobParams], blocks: BlockSource, ensemble: Ensemble | KeptSources, precision: str,
              options: RunOptions = DEMUCS) -> FileJob:
    params = call.params
    output = Output(params.output.format, params.output.sample_rate, params.output.channels)
    return FileJob(ensemble, blocks, targets(params, call.workdir), output, options,
                   kept_as=CACHE_DTYPES[precision], spool_dir=call.workdir)


def _separated(call: JobCall[JobParams], job: FileJob, progress: JobProgress, rate: int) -> Callable[[int], None]:
    """The job's progress as the sources' frames at `rate` are done: the share, and the seconds of each
    stem written (the denoised ones come at the end)."""
    total = output_frames(job.source.frames, job.source.rate, rate)
    if job.output.format not in UNREADABLE_WHILE_WRITTEN:  # front to back, a wav header final from the start
        for target in job.targets:
            call.growing(target.stem, Path(str(target.target)))
    live = [target.stem for target in job.targets if not target.denoise]

    def separated(done: int) -> None:
        progress.separated(done / total, dict.fromkeys(live, done / rate))
    return separated


def _keeping(draft: Draft, rows: list[int]) -> Callable[[Region], None]:
    """Each region's estimated sources (`rows`) written into `draft`; a failed write only ends the draft."""
    def keep(region: Region) -> None:
        try:
            draft.write(region.start, region.stems[rows].cpu().numpy())
        except (OSError, ValueError) as exc:
            log.warning("stem cache entry %s not written: %s", draft.key, exc)
            draft.discard()
    return keep


def _regions(files: SourceFiles) -> Iterator[Region]:
    return (Region(start, torch.from_numpy(stems)) for start, stems in files.regions())


def _build(job: FileJob, files: SourceFiles, progress: Callable[[int], None]) -> None:
    """The job's files built from a cache entry's `files`, closed after, here on an audio thread."""
    try:
        run_steps(file_steps(job, progress))
    finally:
        files.close()


def _stem_files(job: FileJob, progress: JobProgress) -> dict[str, StemFile]:
    stems = {}
    for target in job.targets:
        stems[target.stem] = StemFile(Path(str(target.target)), job.output.format, job.frames / job.output.sample_rate)
        progress.file_written(target.stem, job.frames / job.output.sample_rate)
    return stems



