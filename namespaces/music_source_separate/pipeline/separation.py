"""One input separated by one model, shared by invoke and jobs: decoded and hashed on an audio
thread, its sources taken from the stem cache or from one model run on the scheduler (the model
leased from the loaded models, loaded on an audio thread if needed), then kept in the cache.

The large arrays live in a `Work` that the audio threads fill and finally empty, so that they are
freed there and never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from sami_gateway.runtime.namespace import InputBytes, release
from sami_gateway.runtime.scheduler import Scheduler

from ..audio.convert import resample, to_stereo
from ..audio.decode import decode
from ..audio.sniff import AudioHint
from ..codes import model_error, translated
from ..engine.ensemble import Ensemble
from ..engine.inference import RunOptions, Steps, count_chunks, counting, forward
from ..models.layout import ModelStoreError
from ..models.listing import StoreModels
from ..models.loaded import Lease, LoadedModels
from ..separator import Separator
from ..settings import SeparationSettings
from ..streaming.blocks import ArrayBlocks
from ..streaming.separation import Region, stream_steps
from ..streaming.statistics import MixStatistics
from .on_thread import run_on, run_owned, soon_on
from .stem_cache import CacheUse, StemCache, cache_key, input_sha256

SHIFTS = 0  # Demucs's one random shift averages nothing and makes answers irreproducible
# Stems are kept (and always used) at the precision they were computed in: float16 carries the
# 8-bit mantissa of bf16 inference losslessly and more than a 16-bit output needs, at half the bytes.
CACHE_DTYPES: dict[str, type[np.floating]] = {"fast": np.float16, "exact": np.float32}
T = TypeVar("T")


@dataclass(frozen=True)
class ModelKey:
    """A model as loaded: its name, the one bag member run alone, and its layer files (so that a
    model replaced in the store is loaded again and cached apart)."""

    name: str
    only_load: str | None
    layer_files: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.name}:{self.only_load}" if self.only_load else self.name


@dataclass(frozen=True)
class Lane:
    """Where one kind of work runs: its audio threads, batch or interactive, and its deadline."""

    pool: ThreadPoolExecutor
    batch: bool
    timeout: float


@dataclass(frozen=True)
class InputInfo:
    """What the input turned out to be."""

    format: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Landed:
    """What a finished separation hands to the requests that waited for it."""

    sources: dict[str, np.ndarray]
    rate: int


@dataclass(frozen=True)
class Flight:
    """A separation under way, by cache entry and lane (batch or not), and what its waiters await."""

    entry: tuple[str, bool]
    future: asyncio.Future[Landed | None]


@dataclass(eq=False)
class Work:
    """One separation in progress; the audio threads fill it and `clear` it."""

    use: CacheUse  # whose cache entries it reads and writes
    info: InputInfo | None = None
    stereo: np.ndarray | None = None  # the decoded input, (2, frames) at its own rate
    digest: str = ""  # sha256 of the input bytes ("" with the cache off)
    mix: np.ndarray | None = None  # (2, frames) at `rate`
    sources: dict[str, np.ndarray] = field(default_factory=dict)  # what the model estimates, at `rate`
    rate: int = 0
    cache_hit: bool = False
    separation_seconds: float = 0.0
    lease: Lease[ModelKey, Separator] | None = None  # the model, while it runs
    layout: tuple[tuple[str, int], ...] = ()  # the estimated sources and their rows in the model's output
    span_by_span: bool = False  # its sources are written region by region (`Pipeline._regions`)
    held: ExitStack = field(default_factory=ExitStack)  # the bytes it counts as held, until `clear`

    def clear(self) -> None:
        self.stereo = self.mix = None
        self.sources = {}
        self.held.close()


def estimated_sources(ensemble: Ensemble) -> tuple[tuple[str, int], ...]:
    """The sources some member is weighted for (a specialist run alone estimates only its own), each
    with its row in the output."""
    return tuple((name, index) for index, name in enumerate(ensemble.sources)
                 if sum(member.weights[index] for member in ensemble.members) > 0)


class Pipeline:
    """Separations through the stem cache, the loaded models and the scheduler."""

    def __init__(self, store: StoreModels, models: LoadedModels[ModelKey, Separator], cache: StemCache,
                 scheduler: Scheduler, settings: SeparationSettings) -> None:
        self.store = store
        self.models = models
        self.cache = cache
        self._scheduler = scheduler
        self._settings = settings
        self._dtype = CACHE_DTYPES[settings.precision]
        # Separations under way, by cache key and lane: a second request of a lane for the same entry
        # waits for the first (an invoke never waits for a job's batch work, which yields to invokes).
        self._flights: dict[tuple[str, bool], asyncio.Future[Landed | None]] = {}

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    @property
    def kept_itemsize(self) -> int:
        """Bytes of one sample of the sources as kept (the cache's precision)."""
        return int(np.dtype(self._dtype).itemsize)

    def model_key(self, name: str, only_load: str | None) -> ModelKey:
        """The key of `name` as the store holds it now (a store lookup: call it off the event loop)."""
        try:
            return ModelKey(name, only_load, self.store.describe(name).layer_files(only_load))
        except ModelStoreError as exc:
            raise model_error(exc) from exc

    async def separate(self, lane: Lane, data: InputBytes, hint: AudioHint, name: str, only_load: str | None,
                       use: CacheUse, progress: Callable[[float], None] | None = None,
                       held: Callable[[Work], int] | None = None) -> Work:
        """The input decoded and its sources by the model `name` (only `only_load`'s specialist of a
        bag), through the stem cache's entries of `use.scope`: while the same entry is being separated
        for another request, it waits for that one and takes its sources (single flight). With `held`,
        the bytes it says the work
        holds are counted by the scheduler's admission (`Scheduler.holding`) from the moment the model's
        rate is known until the work is cleared; past the bound it is refused (503) before the model runs."""
        work = Work(use=use)
        key = await run_on(lane.pool, self._open, work, data, hint, name, only_load)
        entry = self._cache_key(work, key) if work.digest else None
        if entry is not None:
            async with asyncio.timeout(lane.timeout):  # a waiter has the deadline its own run would have
                while not work.cache_hit and (under_way := self._flights.get((entry, lane.batch))) is not None:
                    landed = await asyncio.shield(under_way)  # the same song by the same model, being separated
                    if landed is not None:
                        await run_on(lane.pool, self._adopt, work, entry, landed)
        if work.cache_hit:
            await self._hold(lane, work, held)
            return work
        flight = self.take_off(lane, entry)
        try:
            await self._separated(lane, work, key, progress, held)
        except BaseException:
            self.land(flight, None)
            work.held.close()  # a failed run's bytes are no longer held, whoever clears it
            raise
        self.land(flight, Landed(dict(work.sources), work.rate))
        return work

    async def after_flights(self, lane: Lane, entry: str, look: Callable[[], T | None],
                            release: Callable[[T], object]) -> T | None:
        """What `look` finds (run on the lane's audio thread: a cache lookup of `entry`), now, or else once
        no separation of `entry` by this lane is under way (single flight: it waits for the one that is,
        within the lane's deadline). None: nothing found and nothing under way, so the caller separates
        it, taking off before it awaits anything else. What a look finds after its caller was cancelled
        goes to `release`."""
        found = await run_owned(lane.pool, release, look)
        async with asyncio.timeout(lane.timeout):  # a waiter has the deadline its own run would have
            while found is None and (flight := self._flights.get((entry, lane.batch))) is not None:
                await asyncio.shield(flight)
                found = await run_owned(lane.pool, release, look)
        return found

    def take_off(self, lane: Lane, entry: str | None) -> Flight | None:
        """A separation of cache entry `entry` by `lane` is under way (none without an entry); its
        requests for the same entry wait until it lands."""
        if entry is None:
            return None
        flight = Flight((entry, lane.batch), asyncio.get_running_loop().create_future())
        self._flights[flight.entry] = flight.future
        return flight

    def land(self, flight: Flight | None, landed: Landed | None) -> None:
        """The separation has ended: its waiters take its sources, from its cache entry if kept, else from
        `landed` (None, or `landed` without sources and no entry kept: it failed, its client left, or its
        sources were not kept, and one of them separates instead)."""
        if flight is None or flight.future.done():  # landed already (nothing was to be kept)
            return
        if self._flights.get(flight.entry) is flight.future:
            del self._flights[flight.entry]
        flight.future.set_result(landed)

    def _adopt(self, work: Work, entry: str, landed: Landed) -> None:
        """The sources another request just separated, as a cache hit: the entry (marked held by this
        work's holder) if it was kept, else those the other request holds (if it holds them)."""
        cached = self.cache.get(entry, work.use.holder)
        if cached is None and not landed.sources:
            return
        work.cache_hit, work.rate = True, landed.rate
        work.sources = dict(cached.sources) if cached is not None else dict(landed.sources)
        self._to_model_rate(work)

    async def _separated(self, lane: Lane, work: Work, key: ModelKey, progress: Callable[[float], None] | None,
                         held: Callable[[Work], int] | None) -> None:
        # The lease may still be taken on its thread when the caller leaves: it ends once it is.
        steps, total = await run_owned(lane.pool, lambda _: self._give_back(lane.pool, work), self._lease, work, key)
        try:
            await self._hold(lane, work, held)
        except BaseException:
            steps.close()
            self._give_back(lane.pool, work)
            raise
        started = time.perf_counter()
        try:
            assert work.info is not None
            stems = await self._scheduler.submit(steps, work.info.duration, lane.timeout,
                                                 _progressing(total, progress), torch.inference_mode,
                                                 batch=lane.batch)
        finally:
            self._give_back(lane.pool, work)
        work.separation_seconds = time.perf_counter() - started
        handed = [stems]
        del stems, steps
        await run_on(lane.pool, self._keep, work, handed, key)

    async def _hold(self, lane: Lane, work: Work, held: Callable[[Work], int] | None) -> None:
        if held is None:
            return
        try:
            work.held.enter_context(self._scheduler.holding(held(work)))
        except BaseException:
            await run_on(lane.pool, work.clear)  # its arrays are freed on the audio thread
            raise

    def _open(self, work: Work, data: InputBytes, hint: AudioHint, name: str, only_load: str | None) -> ModelKey:
        """Decode and hash the input (then let it go), and look the stems up in the cache."""
        key = self.model_key(name, only_load)
        with translated():
            audio = decode(data, hint, self._settings.max_audio_seconds, self._settings.max_input_channels)
        work.digest = input_sha256(data) if self.cache.enabled else ""
        release(data)  # read: its memory goes back now, not when the request ends
        work.info = InputInfo(audio.format, audio.sample_rate, audio.samples.shape[0], audio.samples.shape[-1])
        work.stereo = to_stereo(audio.samples)
        del audio
        cached = self.cache.get(self._cache_key(work, key), work.use.holder) if work.digest else None
        if cached is not None:
            work.cache_hit, work.rate, work.sources = True, cached.samplerate, dict(cached.sources)
            self._to_model_rate(work)
        return key

    def _to_model_rate(self, work: Work) -> None:
        assert work.info is not None and work.stereo is not None
        with translated():
            work.mix = np.ascontiguousarray(resample(work.stereo, work.info.sample_rate, work.rate),
                                            dtype=np.float32)
        work.stereo = None

    def _lease(self, work: Work, key: ModelKey) -> tuple[Steps, int]:
        """The model leased into `work` (loaded here if needed), the input at its rate, the calls to make."""
        work.lease = self.models.acquire(key)
        try:
            separator = work.lease.value
            work.rate, work.layout = separator.samplerate, estimated_sources(separator.model)
            self._to_model_rate(work)
            assert work.mix is not None
            total = count_chunks(separator.model, work.mix.shape[-1], RunOptions(shifts=SHIFTS))
            if _demucs(separator) and work.mix.shape[-1] > 1:
                work.span_by_span = True
                return self._regions(separator, work), total
            return separator.plan(torch.from_numpy(work.mix), shifts=SHIFTS), total
        except BaseException:
            self._release(work)
            raise

    def _regions(self, separator: Separator, work: Work) -> Steps:
        """Demucs's model calls over the mix, span by span (`streaming`), each final region of the
        estimated sources written straight into `work.sources` at the cache's precision: no whole-song
        float32 array per source. With the whole mix's statistics, taken as `engine.separation_steps`
        takes them, the sources are the whole-song computation's to the bit."""
        mix = work.mix
        assert mix is not None
        reference = torch.from_numpy(mix).mean(0)
        statistics = MixStatistics(mix.shape[-1], reference.mean().item(), reference.std().item())
        del reference
        channels = separator.model.audio_channels
        work.sources = {name: np.empty((channels, mix.shape[-1]), self._dtype) for name, _ in work.layout}

        def keep(region: Region) -> None:
            stems = region.stems.cpu().numpy()
            for name, row in work.layout:
                work.sources[name][:, region.start:region.stop] = stems[row]  # rounded as `astype` rounds

        options = RunOptions(shifts=SHIFTS, seed=separator.seed, precision=separator.precision)
        yield from stream_steps(separator.model, ArrayBlocks(mix, work.rate), statistics, keep, options)
        return None

    def _release(self, work: Work) -> None:
        lease, work.lease = work.lease, None
        if lease is not None:
            self.models.release(lease)

    def _give_back(self, pool: ThreadPoolExecutor, work: Work) -> None:
        """End the work's lease on an audio thread, where a model it unloads is freed (here once the
        pool stopped); the event loop never holds the last reference to a model."""
        soon_on(pool, self._release, work)

    def _keep(self, work: Work, handed: list[Any], key: ModelKey) -> None:
        """The model's output as the estimated sources, at the cache's precision (already so when it
        came span by span), kept in the cache."""
        output = handed.pop()
        if output is not None:
            stems = output.cpu().numpy()
            del output
            work.sources = {name: stems[row].astype(self._dtype) for name, row in work.layout}
            del stems
        if work.digest:
            self.cache.put(self._cache_key(work, key), work.sources, work.rate, work.use.holder)

    def _cache_key(self, work: Work, key: ModelKey) -> str:
        return self.entry_key(work.digest, key, work.use.scope)

    def entry_key(self, digest: str, key: ModelKey, scope: str) -> str:
        """The cache entry of an input (its sha256) separated by model `key` for `scope`."""
        device = torch.device(self._settings.device).type  # cpu and cuda kernels round differently
        model = "|".join((key.label, ",".join(key.layer_files), device))
        return cache_key(digest, model, self._settings.precision, scope)


def invoke_held_bytes(work: Work, kept_itemsize: int, out_rate: int, out_channels: int) -> int:
    """What an invoke holds at most, in bytes, once its input is decoded: the decoded input and the mix
    at the model's rate (float32 stereo, both while one is resampled into the other), then the mix, the
    estimated sources (`kept_itemsize` bytes a sample; none on a cache hit, where they are the cache's;
    a float32 copy too where the model's whole-song output is kept), the target stem (float32 stereo),
    and the output at its rate and channels (float32, and its encoding at most as large). The invoke's
    body was let go when `data` was decoded."""
    assert work.info is not None
    model_frames = -(-work.info.frames * work.rate // work.info.sample_rate)
    out_frames = -(-work.info.frames * out_rate // work.info.sample_rate)
    itemsize = kept_itemsize + (0 if work.span_by_span else 4)
    sources = 0 if work.cache_hit else len(work.layout) * 2 * model_frames * itemsize
    decoding = 8 * work.info.frames + 8 * model_frames
    separating = 8 * model_frames + sources + 8 * model_frames + 2 * 4 * out_channels * out_frames
    return max(decoding, separating)


def _demucs(separator: Separator) -> bool:
    """Whether the model runs Demucs's own segments (a model of another family brings its own inference)."""
    return getattr(separator.model.members[0].model, "demix_steps", None) is None


def _progressing(total: int, progress: Callable[[float], None] | None) -> Callable[[Any], Any]:
    """`forward`, reporting after each call the share of the `total` calls done."""
    if progress is None:
        return forward
    done = [0]

    def on_chunk() -> None:
        done[0] += 1
        progress(min(1.0, done[0] / max(1, total)))
    return counting(forward, on_chunk)
