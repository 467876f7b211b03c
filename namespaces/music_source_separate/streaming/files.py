"""An input separated into stem files block by block: decoded, separated, each stem built, resampled
and written as it is final, the same as the one-shot pipeline renders it (`stems.render`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from ..audio.av_writer import AvWriter, av_writer
from ..audio.convert import output_frames, to_channels
from ..audio.formats import BIT_RATES
from ..audio.lame import Mp3Writer, lame
from ..engine.ensemble import Ensemble
from ..engine.inference import RunOptions
from ..requests.stems import NO, source_of
from .blocks import BlockReader, BlockSource, FileBlocks, MappedBlocks
from .encode import AV_FORMATS, WavWriter, pcm16, streams_out
from .gate import DenoisedBlocks
from .resample import ResampledBlocks, Resampler
from .separation import DEMUCS, Region, StreamSteps, run_steps, stream_steps
from .spool import Spool, SpoolWriter
from .statistics import MixStatistics, measure

Writer = WavWriter | sf.SoundFile | Mp3Writer | AvWriter  # what a stem is written with, by format


@dataclass(frozen=True)
class StemTarget:
    """Where one stem (a source, or `no_<source>`: the mix minus it) is written; `from_sources` builds
    `no_<source>` as the sum of the other estimated sources instead, and `denoise` gates the stem
    (as SAMI's 4-stem models build theirs, `stems.sami_target`)."""

    stem: str
    target: Path | str | BinaryIO
    from_sources: bool = False
    denoise: bool = False


@dataclass(frozen=True)
class Output:
    """The stem files' format, rate and channels (each file as long as the input, at that rate)."""

    format: str
    sample_rate: int
    channels: int


class StemWriter:
    """One stem pushed at the model's rate, written resampled, mapped to the output's channels and cut
    or padded to exactly `frames`, as `stems.render` does at once."""

    def __init__(self, target: StemTarget, output: Output, model_rate: int, model_frames: int, frames: int) -> None:
        if not streams_out(output.format):
            raise ValueError(f"stems are not written block by block as {output.format!r}")
        self.output = output
        self.resampler = Resampler(model_rate, output.sample_rate, 2, model_frames)
        self.left = frames
        self.handle = _writer(target.target, output, frames)

    def push(self, block: np.ndarray, last: bool = False) -> None:
        out = to_channels(self.resampler.push(block, last), self.output.channels)[:, :self.left]
        if last and out.shape[-1] < self.left:
            out = np.concatenate([out, np.zeros((out.shape[0], self.left - out.shape[-1]), np.float32)], axis=1)
        if isinstance(self.handle, (Mp3Writer, AvWriter)):  # as `audio.encode` takes samples: NaN 0, clipped
            self.handle.write(np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0))
            if last:
                self.handle.finish()
        else:
            self.handle.write(pcm16(out))
        self.left -= out.shape[-1]

    def close(self) -> None:
        self.handle.close()


def _writer(target: Path | str | BinaryIO, output: Output, frames: int) -> Writer:
    """The file of one stem, `frames` long, opened for writing."""
    library = lame()
    if output.format == "mp3" and library is not None:  # the Info frame written in place at the end
        if not isinstance(target, (Path, str)):
            raise ValueError("an mp3 stem is written to a path (its first frame is rewritten at the end)")
        return library.writer(target, output.channels, output.sample_rate, BIT_RATES[output.channels], frames)
    if output.format in AV_FORMATS:  # an m4a's index written, and its edit list set, at the end
        if isinstance(target, (Path, str)):
            return av_writer(target, output.format, output.channels, output.sample_rate, frames)
        return AvWriter(target, output.format, output.channels, output.sample_rate, frames)
    if output.format == "wav" and output.channels <= 2:  # its header final from the first byte
        return WavWriter(target, output.sample_rate, output.channels, frames)
    return sf.SoundFile(target, "w", output.sample_rate, output.channels, "PCM_16", format=output.format.upper())


@dataclass(frozen=True)
class KeptSources:
    """Sources separated before (a stem cache entry), at `rate`: `regions()` hands them on in order,
    each region's stems in the rows of `names`, every one of them estimated."""

    names: tuple[str, ...]
    rate: int
    regions: Callable[[], Iterator[Region]]


@dataclass(frozen=True)
class FileJob:
    """What `file_steps` separates and writes: with `KeptSources` for an ensemble, the files are built
    from them and no model runs."""

    ensemble: Ensemble | KeptSources
    source: BlockSource
    targets: Sequence[StemTarget]
    output: Output
    options: RunOptions = DEMUCS
    only_stem: str | None = None
    kept_as: type[np.floating] = np.float32  # the sources rounded to it first, as the stem cache keeps them
    spool_dir: Path | str | None = None

    @property
    def frames(self) -> int:
        """The length of each file."""
        return output_frames(self.source.frames, self.source.rate, self.output.sample_rate)


def file_steps(job: FileJob, progress: Callable[[int], None] | None = None,
               sources: Callable[[Region], None] | None = None) -> StreamSteps:
    """The model calls that separate `job.source` (at the model's rate: `_model_mix`), for a
    scheduler to run; each target is written as its regions are final (a denoised one once the
    separation is done: spooled, then gated), `sources` hears each region of the sources first and
    `progress` the model-rate frames done. The files are complete when the steps end (with
    `KeptSources`, there are no calls: the files are written on the first step)."""
    ensemble = job.ensemble
    if isinstance(ensemble, KeptSources):
        mix = ResampledBlocks(MappedBlocks(job.source, 2), ensemble.rate)
        builder = StemBuilder(ensemble.names, range(len(ensemble.names)), job, BlockReader(mix.blocks()))
        with _stem_files(job, builder, ensemble.rate, mix.frames, progress) as write:
            stop = 0
            for region in ensemble.regions():
                write(region)
                stop = region.stop
            if stop != mix.frames:  # the files would not be finished (no last region)
                raise ValueError(f"the kept sources end at {stop} of the mix's {mix.frames} frames")
        return
    if ensemble.audio_channels != 2:
        raise ValueError("stem files are built from a stereo model's sources")
    with _model_mix(job, ensemble.samplerate) as (mix, statistics):
        builder = StemBuilder(ensemble.sources, estimated_rows(ensemble), job, BlockReader(mix.blocks()))
        with _stem_files(job, builder, ensemble.samplerate, mix.frames, progress) as built:
            def write(region: Region) -> None:
                if sources is not None:
                    sources(region)
                built(region)

            yield from stream_steps(ensemble, mix, statistics, write, job.options, job.only_stem)


@contextmanager
def _model_mix(job: FileJob, rate: int) -> Iterator[tuple[BlockSource, MixStatistics]]:
    """The mix at the model's rate, to be read twice at once (by the model and by the stems' builder), and
    its statistics. A wav or flac already at that rate is read again from the input, its statistics taken
    in a first pass over the same blocks: no decoding or resampling worth keeping, and a 2-hour job
    writes 2.5 GB less. Any other input is decoded (and resampled) once, into a spool that gives both."""
    mix = ResampledBlocks(MappedBlocks(job.source, 2), rate)
    if isinstance(job.source, FileBlocks) and job.source.rate == rate:
        yield mix, measure(mix.blocks())
        return
    with Spool(mix, job.spool_dir) as spool:
        yield spool, spool.statistics


@contextmanager
def _stem_files(job: FileJob, builder: StemBuilder, rate: int, frames: int,
                progress: Callable[[int], None] | None) -> Iterator[Callable[[Region], None]]:
    """Where the regions (of `frames` at `rate`) go: each target built and written; the denoised ones,
    spooled meanwhile, gated and written once the body ends."""
    with ExitStack() as stack:
        writers: list[StemWriter] = []
        for target in job.targets:  # each closed however the steps end, even if a later one cannot open
            writers.append(StemWriter(target, job.output, rate, frames, job.frames))
            stack.callback(writers[-1].close)
        raw = {index: SpoolWriter(rate, 2, job.spool_dir)
               for index, target in enumerate(job.targets) if target.denoise}
        for pending in raw.values():
            stack.callback(pending.close)

        def write(region: Region) -> None:
            built = builder.build(region)
            for index, (block, writer) in enumerate(zip(built, writers, strict=True)):
                if index in raw:
                    raw[index].write(block)
                else:
                    writer.push(block, region.stop == frames)
            if progress is not None:
                progress(region.stop)

        yield write
        for index, pending in raw.items():
            _write_denoised(pending.done(), writers[index])


def estimated_rows(ensemble: Ensemble) -> list[int]:
    """The rows of the sources some member is weighted for: a specialist run alone estimates only its own."""
    return [index for index in range(len(ensemble.sources))
            if sum(member.weights[index] for member in ensemble.members) > 0]


class StemBuilder:
    """Each target's samples for a region, from the region's sources (rows named by `sources`, those of
    `estimated` computed) and the mix's same frames."""

    def __init__(self, sources: Sequence[str], estimated: Iterable[int], job: FileJob, mix: BlockReader) -> None:
        self.job = job
        self.mix = mix
        self.rows = [list(sources).index(source_of(target.stem)) for target in job.targets]
        self.estimated = list(estimated)

    def build(self, region: Region) -> list[np.ndarray]:
        stems = region.stems.cpu().numpy().astype(self.job.kept_as).astype(np.float32)
        mixed = self.mix.take(stems.shape[-1])
        built = []
        for target, row in zip(self.job.targets, self.rows, strict=True):
            if not target.stem.startswith(NO):
                built.append(stems[row])
            elif target.from_sources:
                built.append(sum((stems[index] for index in self.estimated), np.zeros_like(stems[row])) - stems[row])
            else:
                built.append(mixed - stems[row])
        return built


def _write_denoised(stem: Spool, writer: StemWriter) -> None:
    """A spooled stem gated and written; the spool is freed after."""
    with stem:
        held: np.ndarray | None = None
        for block in DenoisedBlocks(stem).blocks():
            if held is not None:
                writer.push(held)
            held = block
        assert held is not None
        writer.push(held, last=True)


def separate_to_files(job: FileJob, progress: Callable[[int], None] | None = None) -> int:
    """`file_steps` run here, in order; returns the frames of each file."""
    run_steps(file_steps(job, progress))
    return job.frames
