"""16-bit wav and flac written block by block, the same bytes as `audio.encode` writes at once (mp3 too,
through `audio.lame.Mp3Writer`, where a LAME library loads; ADTS aac and m4a through
`audio.av_writer.AvWriter`).

A wav file's header is written first with its final lengths (`WavWriter`), so a reader of a file still
being written sees the bytes the finished file will have. libsndfile writes its lengths at the end;
LAME's Info frame, the mp3's first, is written in place at the end. An ADTS aac is whole frames from its
first byte; an m4a's index (moov) comes at the end, and is no file to read until then."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import soundfile as sf

from ..audio.lame import lame

FORMATS = ("wav", "flac")
AV_FORMATS = ("aac", "m4a")  # written through PyAV as their samples come (`audio.av_writer`)


def streams_out(fmt: str) -> bool:
    """Whether stems of `fmt` are written block by block: wav, flac, aac and m4a, and mp3 where LAME loads."""
    return fmt in FORMATS or fmt in AV_FORMATS or (fmt == "mp3" and lame() is not None)


def pcm16(block: np.ndarray) -> np.ndarray:
    """(channels, n) float32 to (n, channels) int16, rounded to the nearest step as `audio.encode` does."""
    return np.clip(np.rint(block.T * 32768.0), -32768, 32767).astype(np.int16)


def write_blocks(target: Path | str | BinaryIO, blocks: Iterable[np.ndarray], rate: int, channels: int,
                 fmt: str) -> int:
    """Write float32 (channels, n) blocks as 16-bit `fmt` to a path or a seekable file (the wav header
    is completed at the end); returns the frames written."""
    if fmt not in FORMATS:
        raise ValueError(f"blocks are written as {FORMATS}, not {fmt!r}")
    written = 0
    with sf.SoundFile(target, "w", rate, channels, "PCM_16", format=fmt.upper()) as handle:
        for block in blocks:
            handle.write(pcm16(block))
            written += block.shape[-1]
    return written


def wav_header(frames: int, rate: int, channels: int) -> bytes:
    """The 44-byte header of a 16-bit PCM wav of `frames` frames, byte for byte as libsndfile writes it
    on closing a file of one or two channels."""
    data = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
            + b"data" + struct.pack("<I", data))


class WavWriter:
    """A 16-bit wav of one or two channels and a known length: the header first, then the samples as
    they come, each write straight to the file (unbuffered, so a reader sees it at once)."""

    def __init__(self, target: Path | str | BinaryIO, rate: int, channels: int, frames: int) -> None:
        if channels not in (1, 2):
            raise ValueError("a wav of more than two channels has libsndfile's extensible header")
        self.frames = frames
        self.written = 0
        self._owned = not hasattr(target, "write")
        self._handle = cast(BinaryIO, open(cast(Path | str, target), "wb", buffering=0) if self._owned else target)
        self._handle.write(wav_header(frames, rate, channels))

    def write(self, pcm: np.ndarray) -> None:
        """(n, channels) int16, as `pcm16` gives."""
        if self.written + len(pcm) > self.frames:
            raise ValueError(f"a wav of {self.frames} frames was given {self.written + len(pcm)}")
        self._handle.write(np.ascontiguousarray(pcm, "<i2").tobytes())
        self.written += len(pcm)

    def close(self) -> None:
        """Also on a failure: a file closed short of its length is only ever a failed job's."""
        if self._owned:
            self._handle.close()
