"""Blocks read from files and mapped to the model's channels equal the one-shot decode and conversion."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.audio.convert import to_channels, to_stereo
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.streaming import ArrayBlocks, FileBlocks, MappedBlocks

from ....conftest import tone


def joined(source: ArrayBlocks | FileBlocks | MappedBlocks) -> np.ndarray:
    return np.concatenate(list(source.blocks()), axis=1)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_file_blocks_equal_the_decoded_file(fmt: str, channels: int, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(3.3, 48000, channels), 48000, format=fmt, subtype="PCM_16")
    data = buffer.getvalue()
    decoded = decode(data, AudioHint(), 60.0, 8)
    path = tmp_path / f"in.{fmt.lower()}"
    path.write_bytes(data)
    for source in (FileBlocks(data, 10000), FileBlocks(path)):
        assert (source.rate, source.channels, source.frames) == (48000, channels, decoded.samples.shape[-1])
        assert np.array_equal(joined(source), decoded.samples)
        assert np.array_equal(joined(source), decoded.samples)  # read again from the start


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_mapped_blocks_equal_the_whole_conversion(channels: int) -> None:
    samples = np.ascontiguousarray(tone(2.0, 44100, channels, seed=channels).T)
    stereo = MappedBlocks(ArrayBlocks(samples, 44100, 3001), 2)
    assert np.array_equal(joined(stereo), to_stereo(samples))
    mono = MappedBlocks(ArrayBlocks(samples, 44100, 3001), 1)
    assert np.array_equal(joined(mono), samples.mean(axis=0, keepdims=True))  # as Separator's load_audio
    if channels == 2:
        assert np.array_equal(joined(mono), to_channels(samples, 1))


def test_a_file_shorter_than_its_header_is_refused() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(1.0), 44100, format="WAV", subtype="PCM_16")
    source = FileBlocks(buffer.getvalue())
    source.frames += 10
    with pytest.raises(ValueError, match="header"):
        joined(source)
