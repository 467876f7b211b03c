"""An input separated into stem files block by block: decoded, separated, each stem built, resampled
and written as it is final, the same as the one-shot pipeline renders it (`stems.render`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from ..audio.convert import output_frames, to_channels
from ..engine import RunOptions
from ..stems import NO, source_of
from ..store import Ensemble
from .blocks import BlockReader, BlockSource, MappedBlocks
from .encode import FORMATS, pcm16
from .resample import ResampledBlocks, Resampler
from .separation import DEMUCS, separate_stream
from .spool import Spool


@dataclass(frozen=True)
class StemTarget:
    """Where one stem (a source, or `no_<source>`: the mix minus it) is written."""

    stem: str
    target: Path | str | BinaryIO


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
        if output.format not in FORMATS:
            raise ValueError(f"stems are written block by block as {FORMATS}, not {output.format!r}")
        self.output = output
        self.resampler = Resampler(model_rate, output.sample_rate, 2, model_frames)
        self.left = frames
        self.handle = sf.SoundFile(target.target, "w", output.sample_rate, output.channels, "PCM_16",
                                   format=output.format.upper())

    def push(self, block: np.ndarray, last: bool = False) -> None:
        out = to_channels(self.resampler.push(block, last), self.output.channels)[:, :self.left]
        if last and out.shape[-1] < self.left:
            out = np.concatenate([out, np.zeros((out.shape[0], self.left - out.shape[-1]), np.float32)], axis=1)
        self.handle.write(pcm16(out))
        self.left -= out.shape[-1]

    def close(self) -> None:
        self.handle.close()


def separate_to_files(ensemble: Ensemble, source: BlockSource, targets: Sequence[StemTarget], output: Output, *,
                      options: RunOptions = DEMUCS, only_stem: str | None = None,
                      kept_as: type[np.floating] = np.float32, spool_dir: Path | str | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
    """Separate `source` (decoded once, into a spool at the model's rate) and write each target as its
    regions are final; the sources are rounded to `kept_as` first, as the stem cache keeps them.
    Returns the frames of each file; `progress` hears the model-rate frames done."""
    if ensemble.audio_channels != 2:
        raise ValueError("stem files are built from a stereo model's sources")
    rows = {target.stem: ensemble.sources.index(source_of(target.stem)) for target in targets}
    frames = output_frames(source.frames, source.rate, output.sample_rate)
    mix = ResampledBlocks(MappedBlocks(source, 2), ensemble.samplerate)
    with Spool(mix, spool_dir) as spool:
        writers = [StemWriter(target, output, ensemble.samplerate, spool.frames, frames) for target in targets]
        try:
            reader = BlockReader(spool.blocks())  # the mix again, beside the separation's own reader
            for region in separate_stream(ensemble, spool, spool.statistics, options, only_stem):
                stems = region.stems.cpu().numpy()
                mixed = reader.take(stems.shape[-1])
                last = region.stop == spool.frames
                for target, writer in zip(targets, writers, strict=True):
                    kept = stems[rows[target.stem]].astype(kept_as).astype(np.float32)
                    writer.push(mixed - kept if target.stem.startswith(NO) else kept, last)
                if progress is not None:
                    progress(region.stop)
        finally:
            for writer in writers:
                writer.close()
    return frames
