"""ADTS aac and m4a written as their samples come (`AvWriter`): the bytes `encode_av` writes at once, an ADTS
file whole frames while it grows, an m4a of exactly the samples once finished."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from namespaces.music_source_separate.audio.av_writer import AAC_FRAME, av_writer
from namespaces.music_source_separate.audio.encode import encode_av
from namespaces.music_source_separate.audio.mp4_edit import Mp4Error, set_duration

from .test_exact_length import ffmpeg_frames, noise, written_in_blocks

# (format, rate, channels, frames, block): lengths off the 1024-sample frame, a few samples, blocks of any size
CASES = [("aac", 44100, 2, 2 * 44100 + 7, 65536), ("aac", 22050, 1, 3001, 7), ("aac", 48000, 2, 1, 1000),
         ("aac", 48000, 1, 50_001, 4096), ("aac", 44100, 1, 5, 7), ("m4a", 44100, 2, 2 * 44100 + 7, 4096),
         ("m4a", 48000, 1, 1, 7), ("m4a", 22050, 2, 3001, 7), ("m4a", 22050, 1, 50_001, 65536),
         ("m4a", 48000, 2, 10_000, 1000), ("m4a", 44100, 1, 1025, 1000)]


def adts_frames(data: bytes) -> int:
    """How many ADTS frames `data` is, end to end (AssertionError: anything else, or a frame cut short)."""
    count = at = 0
    while at < len(data):
        header = data[at:at + 7]
        assert len(header) == 7 and header[0] == 0xFF and header[1] & 0xF6 == 0xF0, f"no ADTS frame at byte {at}"
        length = (header[3] & 0x03) << 11 | header[4] << 3 | header[5] >> 5
        assert 7 <= length and at + length <= len(data), f"the frame at byte {at} is cut short"
        at, count = at + length, count + 1
    return count


@pytest.mark.parametrize(("fmt", "rate", "channels", "frames", "block"), CASES)
def test_a_file_written_as_its_samples_come_is_the_one_encoded_at_once(
        tmp_path: Path, fmt: str, rate: int, channels: int, frames: int, block: int) -> None:
    """Blocks of any size give `encode_av`'s bytes once finished (the m4a's lead, tail and edit list
    included); halfway, an ADTS file on disk is the finished one's first whole frames, which decode."""
    pcm = noise(frames, channels, frames)
    at_once = encode_av(pcm, rate, fmt)
    path = tmp_path / f"stem.{fmt}"
    writer = av_writer(path, fmt, channels, rate, frames)
    halfway, finished = written_in_blocks(writer, path, pcm, block, frames // 2)
    assert finished == at_once
    if fmt == "aac":
        assert finished.startswith(halfway)
        assert adts_frames(finished) == -(-frames // AAC_FRAME) + 1  # and the encoder's priming frame
        whole = adts_frames(halfway)  # each frame on disk once encoded: FFmpeg's encoder holds two back
        assert whole >= frames // 2 // AAC_FRAME - 2
        if whole:
            with av.open(io.BytesIO(halfway), format="aac") as container:
                assert sum(frame.samples for frame in container.decode(audio=0)) == whole * AAC_FRAME
    else:
        assert ffmpeg_frames(tmp_path, finished, "m4a", channels) == frames


def test_an_mp4_without_the_boxes_of_its_length_is_refused() -> None:
    with pytest.raises(Mp4Error, match="no"):
        set_duration(b"", 100)
    with pytest.raises(Mp4Error, match="cut short"):
        set_duration(encode_av(noise(2000, 1), 44100, "m4a")[:-10], 100)
