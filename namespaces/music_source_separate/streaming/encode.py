"""16-bit wav and flac written block by block, the same bytes as `audio.encode` writes at once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

FORMATS = ("wav", "flac")


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
