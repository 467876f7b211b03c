"""Tests for audio.sniff: the format named by the magic bytes, and the duration headers claim."""

from __future__ import annotations

import numpy as np
import pytest

from namespaces.music_source_separate.audio.encode import encode
from namespaces.music_source_separate.audio.sniff import AudioHint, probe_duration, sniff
from tests.namespaces.music_source_separate.audio.conftest import NO_HINT, id3_end, soundfile_bytes, strip_id3

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "aac", "mp4"])
def test_sniff_known_formats(samples_by_format: dict[str, bytes], fmt: str) -> None:
    assert sniff(samples_by_format[fmt]) == fmt


def test_sniff_rf64_and_unknown() -> None:
    assert sniff(b"RF64\xff\xff\xff\xffWAVEds64") == "wav"
    assert sniff(b"RIFF\x00\x00\x00\x00AVI LIST") is None
    for data in (b"", b"hello world, not audio", bytes(range(256)) * 4, b"\x00" * 4096, b"ID"):
        assert sniff(data) is None


def test_sniff_tells_mp3_from_adts(samples_by_format: dict[str, bytes]) -> None:
    bare_mp3 = strip_id3(samples_by_format["mp3"])
    assert bare_mp3[0] == 0xFF and sniff(bare_mp3) == "mp3"
    adts = samples_by_format["aac"]
    assert adts[1] & 0x06 == 0 and sniff(adts) == "aac"   # layer bits 00
    id3 = samples_by_format["mp3"][:id3_end(samples_by_format["mp3"])]
    assert sniff(id3 + adts) == "aac"  # what follows the tag decides
    assert sniff(id3 + b"\x00" * 64) == "mp3"
    # Single handmade headers (too short to need a second frame): MPEG-2 L3, ADTS, MPEG-1 L2.
    assert sniff(b"\xff\xf3\x90\x64" + b"\x00" * 8) == "mp3"
    assert sniff(b"\xff\xf1\x50\x80\x02\x1f\xfc") == "aac"
    assert sniff(b"\xff\xfd\x90\x64" + b"\x00" * 8) is None  # layer II is not accepted
    # An MPEG-1 layer III header whose later bytes would also read as a valid ADTS frame length.
    assert sniff(b"\xff\xfb\x90\x64\x01\x00\x00") == "mp3"
    # A lone sync word not followed by a second frame header is not mp3.
    assert sniff(b"\xff\xfb\x90\x64" + b"\x00" * 2000) is None


def test_probe_duration_reads_headers() -> None:
    silent = soundfile_bytes(np.zeros((1, 8000 * 30), np.float32), 8000)
    assert probe_duration(silent, "wav", NO_HINT) == pytest.approx(30.0)
    aac = encode(np.zeros((1, 8000 * 30), np.float32), 8000, "aac")
    assert probe_duration(aac, "aac", NO_HINT) == pytest.approx(30.0, abs=0.3)
    pcm = b"\x00\x00" * 8000 * 2
    assert probe_duration(pcm, "pcm", AudioHint("pcm", 8000, 2)) == pytest.approx(1.0)
    assert probe_duration(pcm, "pcm", AudioHint("pcm")) is None  # no layout: unknown, decode refuses it
    assert probe_duration(b"not audio at all", "mp4", NO_HINT) is None
