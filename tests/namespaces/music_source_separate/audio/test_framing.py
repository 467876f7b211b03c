"""Tests for audio.framing: files cut short or damaged are refused, whole ones from any muxer pass."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from namespaces.music_source_separate.audio import framing
from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
from namespaces.music_source_separate.audio.sniff import sniff
from tests.namespaces.music_source_separate.audio.conftest import NO_HINT, id3_end, kind_of, sine, soundfile_bytes

pytestmark = pytest.mark.timeout(60)

INVALID, TOO_LONG = AudioErrorKind.INVALID, AudioErrorKind.TOO_LONG

@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "aac", "mp4"])
def test_files_cut_short_are_refused(samples_by_format: dict[str, bytes], fmt: str) -> None:
    data = samples_by_format[fmt]
    assert decode(data, NO_HINT, 5).samples.shape[1] > 0
    for keep in (len(data) - 1, len(data) * 2 // 3):
        assert kind_of(data[:keep]) is INVALID, keep


def ape_tag(header: bool) -> bytes:
    """An APEv2 tag with one item: optional header, the item, the footer (sizes exclude the header)."""
    item = (5).to_bytes(4, "little") + bytes(4) + b"Title\0" + b"hello"
    size = len(item) + 32

    def block(is_header: bool) -> bytes:
        flags = (1 << 31 if header else 0) | (1 << 29 if is_header else 0)
        return (b"APETAGEX" + (2000).to_bytes(4, "little") + size.to_bytes(4, "little")
                + (1).to_bytes(4, "little") + flags.to_bytes(4, "little") + bytes(8))

    return (block(True) if header else b"") + item + block(False)


def id3v2_appended() -> bytes:
    """An ID3v2.4 tag with a footer ("3DI"), as taggers may append one to the end of a file."""
    body = b"TIT2" + (6).to_bytes(4, "big") + b"\0\0" + b"\x03hello"
    size = bytes([0, 0, 0, len(body)])
    return b"ID3\x04\0\x10" + size + body + b"3DI\x04\0\x10" + size


LYRICS3V2 = b"LYRICSBEGIN" + b"IND00003" + b"110" + b"%06d" % (11 + 11) + b"LYRICS200"
TRAILERS = {"id3v1": b"TAG" + bytes(125), "ape with header": ape_tag(True), "ape footer only": ape_tag(False),
            "lyrics3 v2 then id3v1": LYRICS3V2 + b"TAG" + bytes(125), "id3v2 with footer": id3v2_appended(),
            "ape then id3v1": ape_tag(True) + b"TAG" + bytes(125)}


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_tags_after_the_last_frame_are_skipped(samples_by_format: dict[str, bytes], fmt: str, trailer: str) -> None:
    """Players skip the metadata blocks written after the audio; the decoder never sees them."""
    whole = decode(samples_by_format[fmt], NO_HINT, 5).samples
    tagged = decode(samples_by_format[fmt] + TRAILERS[trailer], NO_HINT, 5).samples
    np.testing.assert_array_equal(tagged, whole)
    stream = framing.whole(samples_by_format[fmt] + TRAILERS[trailer], fmt)  # the frames in place, not copied
    assert isinstance(stream, memoryview) and stream == samples_by_format[fmt]


def test_what_no_tag_explains_is_refused(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    assert kind_of(mp3 + b"junk" * 40) is INVALID
    assert kind_of(mp3 + b"TAG" + bytes(125) + b"junk") is INVALID


def test_concatenated_mp3_files_with_their_tags_decode_in_full(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    one = decode(mp3, NO_HINT, 5).samples.shape[1]
    assert decode(mp3 + mp3, NO_HINT, 5).samples.shape[1] >= 2 * one


def test_chained_ogg_is_refused_not_cut_to_its_first_link(samples_by_format: dict[str, bytes]) -> None:
    """libsndfile would decode only the first stream of a chain: refused with a clear reason."""
    ogg = samples_by_format["ogg"]
    with pytest.raises(AudioError, match="chained Ogg"):
        decode(ogg + ogg, NO_HINT, 5)


@pytest.mark.parametrize("declared", [0, 0x7FFFFF00, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF])
def test_wav_with_a_streaming_placeholder_length_is_read_to_the_end(declared: int) -> None:
    """arecord and other stream writers put about 2 GiB in the `data` size: read what is there."""
    data = bytearray(soundfile_bytes(sine(8000, 1, 1.0), 8000))
    position = data.index(b"data")
    data[position + 4:position + 8] = declared.to_bytes(4, "little")
    assert decode(bytes(data), NO_HINT, 5).samples.shape == (1, 8000)


def test_many_tiny_blocks_are_refused_quickly() -> None:
    """A large file of minimal boxes or chunks costs a bounded walk, not minutes in FFmpeg."""
    boxes = b"\0\0\0\x18ftypM4A \0\0\0\0M4A mp42" + b"\0\0\0\x08free" * 2_000_000
    started = time.perf_counter()
    with pytest.raises(AudioError, match="top-level MP4 boxes"):
        decode(boxes, NO_HINT, 600)
    chunks = b"RIFF\xff\xff\xff\x7fWAVE" + b"junk\0\0\0\0" * 2_000_000
    with pytest.raises(AudioError, match="chunks before the audio"):
        decode(chunks, NO_HINT, 600)
    assert time.perf_counter() - started < 5


def test_mp3_padding_after_its_tag_is_accepted(samples_by_format: dict[str, bytes]) -> None:
    mp3 = samples_by_format["mp3"]
    tag_end = id3_end(mp3)
    padded = mp3[:tag_end] + bytes(700) + mp3[tag_end:]  # zeros a tagger left after the tag
    # FFmpeg finds the frames, though no longer the LAME gapless trim: every frame is decoded.
    assert decode(padded, NO_HINT, 5).samples.shape == (2, 21 * 1152)
    with pytest.raises(framing.Damaged, match="no MPEG frame where the stream starts"):
        framing.whole(mp3[:tag_end] + b"\x13\x37" * 500, "mp3")


def test_flac_of_unknown_length_is_decoded_and_bounded() -> None:
    """STREAMINFO's total of 0 means "unknown" (stream encoders write it): decoded in full,
    the duration limit applied while decoding, and a cut-short one still refused."""
    data = bytearray(soundfile_bytes(sine(44100, 2, 1.0), 44100, "FLAC"))
    field = int.from_bytes(data[18:26], "big")
    data[18:26] = (field & ~((1 << 36) - 1)).to_bytes(8, "big")
    assert decode(bytes(data), NO_HINT, 5).samples.shape == (2, 44100)
    assert kind_of(bytes(data), max_seconds=0.5) is TOO_LONG
    assert kind_of(bytes(data[: len(data) // 2])) is INVALID


def test_ogg_without_its_end_of_stream_page_is_refused(samples_by_format: dict[str, bytes]) -> None:
    data = samples_by_format["ogg"]
    last = data.rindex(b"OggS")
    assert data[last + 5] & 0x04  # the last page carries the end-of-stream flag
    assert kind_of(data[:last]) is INVALID  # whole pages, but the stream never ends


def test_mp3_cut_between_frames_is_refused_by_its_frame_count(samples_by_format: dict[str, bytes]) -> None:
    data = samples_by_format["mp3"]
    position = framing.skip_id3(data)
    for _ in range(5):
        position += framing.mp3_frame_length(data, position) or 0
    with pytest.raises(framing.Damaged, match="^4 MPEG frames of the 21 its header declares$"):
        framing.whole(data[:position], "mp3")


@pytest.mark.parametrize(("name", "args", "suffix"), [
    ("mp3 without a Xing header", ["-c:a", "libmp3lame", "-write_xing", "0"], "mp3"),
    ("mp3 vbr", ["-c:a", "libmp3lame", "-q:a", "2"], "mp3"),
    ("opus in ogg", ["-c:a", "libopus"], "ogg"),
    ("vorbis in ogg", ["-c:a", "libvorbis"], "ogg"),
    ("flac", ["-c:a", "flac"], "flac"),
    ("adts", ["-c:a", "aac", "-f", "adts"], "aac"),
    ("mp4 with the index first", ["-c:a", "aac", "-movflags", "+faststart"], "mp4"),
    ("m4a", ["-c:a", "aac"], "m4a"),
])
def test_whole_files_from_ffmpeg_are_accepted(tmp_path: Path, name: str, args: list[str], suffix: str) -> None:
    """Files from another muxer pass the framing walks: the checks refuse damage, not producers."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required: bash scripts/install.sh --test installs it"
    source, output = tmp_path / "in.wav", tmp_path / f"out.{suffix}"
    source.write_bytes(soundfile_bytes(sine(44100, 2, 1.0), 44100))
    subprocess.run([ffmpeg, "-v", "error", "-i", str(source), *args, str(output)], check=True, timeout=60)
    data = output.read_bytes()
    assert framing.whole(data, sniff(data) or "") is data, name
    decoded = decode(data, NO_HINT, 5)
    assert decoded.samples.shape[0] == 2 and decoded.samples.shape[1] >= decoded.sample_rate  # all of 1 s



def test_an_adts_stream_as_long_as_a_job_may_be_is_still_walked_to_its_end() -> None:
    """300,000 frames (about 2 hours at 44.1 kHz, past the walk's old bound): broken at its end, still refused."""
    frame = bytes((0xFF, 0xF1, 0x50, 0x80, 0x00, 0xFF, 0xFC))  # an AAC-LC header of 44.1 kHz stereo, 7 bytes long
    assert framing.adts_frame_length(frame, 0) == 7
    stream = frame * 300_000
    assert framing.whole(stream, "aac") is stream
    with pytest.raises(framing.Damaged, match="ADTS frame"):
        framing.whole(stream + frame[:4], "aac")
