"""Blocks read from files and mapped to the model's channels equal the one-shot decode and conversion."""

from __future__ import annotations

import io
import mmap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.audio import decode as decoding
from namespaces.music_source_separate.audio.convert import to_channels, to_stereo
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.encode import encode, encode_av
from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.streaming import ArrayBlocks, BlockSource, DecodedBlocks, FileBlocks, MappedBlocks

from ....conftest import tone
from ..audio.conftest import strip_id3


def joined(source: BlockSource) -> np.ndarray:
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


def compressed(fmt: str, seconds: float = 2.0, rate: int = 44100, channels: int = 2) -> bytes:
    """tone() as a client sends it: our encoders' mp3 (LAME's gapless tag), aac and m4a; FFmpeg's mp3 (an
    ID3v2 tag, its own Xing frame); an mp3 ending in an ID3v1 tag; libsndfile's ogg vorbis; a flac whose
    STREAMINFO leaves the length unknown."""
    samples = np.ascontiguousarray(tone(seconds, rate, channels, seed=3).T)
    if fmt == "ffmpeg-mp3":
        return encode_av(samples, rate, "mp3")
    if fmt == "tagged-mp3":  # an ID3v1 tag after the frames: they are decoded in place, the tag left out
        return encode(samples, rate, "mp3") + b"TAG" + bytes(125)
    if fmt in ("ogg", "flac"):
        buffer = io.BytesIO()
        sf.write(buffer, samples.T, rate, format=fmt.upper(), subtype="VORBIS" if fmt == "ogg" else "PCM_16")
        data = bytearray(buffer.getvalue())
        if fmt == "flac":  # total samples 0: "unknown", which FFmpeg decodes (the CRCs and timestamps checked)
            field = int.from_bytes(data[18:26], "big")
            data[18:26] = (field & ~((1 << 36) - 1)).to_bytes(8, "big")
        return bytes(data)
    return encode(samples, rate, fmt)


@pytest.mark.parametrize("fmt", ["mp3", "ffmpeg-mp3", "tagged-mp3", "aac", "m4a", "ogg", "flac"])
def test_decoded_blocks_are_the_decoded_samples(fmt: str) -> None:
    data = compressed(fmt)
    decoded = decode(data, AudioHint(), 60.0)
    source = DecodedBlocks(data, 60.0, 2, 10000)
    assert (source.format, source.rate, source.channels) == (decoded.format, 44100, 2)
    assert source.frames == decoded.samples.shape[-1]
    for _ in range(2):  # read again from the start
        blocks = list(source.blocks())
        assert [block.shape[-1] for block in blocks[:-1]] == [10000] * (len(blocks) - 1)
        assert np.array_equal(np.concatenate(blocks, axis=1), decoded.samples)


def test_decoded_blocks_read_a_memory_map_in_place(tmp_path: Path) -> None:
    data = compressed("mp3", 1.0, 48000, 1)
    (tmp_path / "in.mp3").write_bytes(data)
    with open(tmp_path / "in.mp3", "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        source = DecodedBlocks(mapped, 60.0, 2)
        assert (source.rate, source.channels, source.frames) == (48000, 1, 48000)
        assert np.array_equal(joined(source), decode(data, AudioHint(), 60.0).samples)


def refusal(data: bytes, max_seconds: float = 60.0, max_channels: int = 2) -> tuple[AudioErrorKind, str]:
    """The refusal of the streamed source, checked to be decode's own."""
    with pytest.raises(AudioError) as whole:
        decode(data, AudioHint(), max_seconds, max_channels)
    with pytest.raises(AudioError) as streamed:
        DecodedBlocks(data, max_seconds, max_channels)
    assert (streamed.value.kind, str(streamed.value)) == (whole.value.kind, str(whole.value))
    return streamed.value.kind, str(streamed.value)


def test_decoded_blocks_refuse_what_decode_refuses() -> None:
    mp3, m4a, ogg = compressed("mp3"), compressed("m4a"), compressed("ogg")
    assert refusal(mp3[:-700])[0] is AudioErrorKind.INVALID  # the last frame cut short
    assert refusal(m4a[:len(m4a) // 2])[0] is AudioErrorKind.INVALID
    assert refusal(ogg[:ogg.rindex(b"OggS")])[0] is AudioErrorKind.INVALID  # no end-of-stream page
    assert refusal(compressed("flac")[:-100])[0] is AudioErrorKind.INVALID
    assert refusal(mp3, max_channels=1)[0] is AudioErrorKind.INVALID
    assert refusal(mp3, max_seconds=1.5) == (AudioErrorKind.TOO_LONG, "audio lasts 2.0 s, the limit is 1.5 s")
    # A header that says 0.5 s before 8 s of frames: the first pass stops at the limit.
    short, long = encode_av(np.zeros((1, 11025), np.float32), 22050, "mp3"), encode_av(
        np.zeros((1, 8 * 22050), np.float32), 22050, "mp3")
    assert refusal(short + strip_id3(long), max_seconds=5)[0] is AudioErrorKind.TOO_LONG


def test_decoded_blocks_refuse_non_finite_samples() -> None:
    x = np.ascontiguousarray(tone(0.5, 8000, 1).T)
    x[0, 3000] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, x.T, 8000, format="WAV", subtype="FLOAT")
    assert refusal(buffer.getvalue()) == (AudioErrorKind.INVALID, "audio contains NaN or infinite samples")


def test_the_memory_budget_of_a_whole_song_does_not_bound_a_streamed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    data = compressed("aac", 1.0)
    monkeypatch.setattr(decoding, "MAX_DECODED_SAMPLES", 40_000)
    with pytest.raises(AudioError, match="exceed 40000 samples"):
        decode(data, AudioHint(), 60.0)
    assert DecodedBlocks(data, 60.0, 2).frames > 44100
