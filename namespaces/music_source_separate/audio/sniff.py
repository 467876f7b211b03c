"""What the bytes are: the format named by their magic bytes, and how long their headers say they last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import av
import soundfile as sf

from . import framing
from .source import open_bytes


@dataclass(frozen=True)
class AudioHint:
    """What the client's payload.audio_info says; only raw PCM depends on it."""

    format: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg"})  # read by libsndfile
# Forced, so ffmpeg never probes further; wav/flac/ogg go to FFmpeg only when their header
# leaves the length unknown (see decode).
DEMUXERS = {"mp3": "mp3", "aac": "aac", "mp4": "mov", "wav": "wav", "flac": "flac", "ogg": "ogg"}
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's SF_COUNT_MAX and anything near it: "length not in the header"


# --- sniffing ---------------------------------------------------------------------------------

def _frame_sync(data: bytes, pos: int, frame_length: Callable[[bytes, int], int | None]) -> bool:
    """A frame header at `pos`, confirmed by the next header when the bytes reach that far."""
    length = frame_length(data, pos)
    if length is None:
        return False
    following = pos + length
    return following + 4 > len(data) or frame_length(data, following) is not None


def _sniff_at(data: bytes, pos: int) -> str | None:
    head = data[pos:pos + 12]
    if len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if _frame_sync(data, pos, framing.adts_frame_length):
        return "aac"
    if _frame_sync(data, pos, framing.mp3_frame_length):
        return "mp3"
    return None


def sniff(data: bytes) -> str | None:
    """The format named by the magic bytes, or None.

    Leading ID3v2 tags are skipped and what follows decides (ADTS, FLAC...); a tag
    followed by anything unrecognised counts as "mp3". MPEG sync words are confirmed
    by the next frame header when the data is long enough to hold one.
    """
    start = framing.skip_id3(data)
    if start == 0:
        return _sniff_at(data, 0)
    return _sniff_at(data, start) or "mp3"


# --- duration ---------------------------------------------------------------------------------

def declared_frames(frames: int) -> int | None:
    """libsndfile's frame count, or None where the header leaves it unknown (a FLAC written
    as a stream has 0 total samples in STREAMINFO, which libsndfile reports as SF_COUNT_MAX)."""
    return frames if frames < _UNKNOWN_FRAMES else None


def _adts_seconds(data: bytes) -> float | None:
    """Seconds counted from the ADTS frame headers.

    Exact, or a lower bound when the chain breaks or the walk stops at its frame bound,
    so it never overstates the length.
    """
    _, _, blocks, rate = framing.adts_walk(data)
    return blocks * 1024 / rate if rate else None


def _av_seconds(data: bytes, fmt: str) -> float | None:
    with av.open(open_bytes(data), mode="r", format=DEMUXERS[fmt]) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base if container.duration is not None else None


def probe_duration(data: bytes, fmt: str, hint: AudioHint) -> float | None:
    """Seconds the audio claims to last, read from headers without decoding; None if unknown.

    Exact for wav/flac/ogg (frame count), pcm (byte count) and ADTS (frame headers);
    the container's figure for mp3 (Xing/LAME header, else a bit-rate estimate) and mp4.
    """
    try:
        if fmt in SOUNDFILE_FORMATS:
            info = sf.info(open_bytes(data))
            frames = declared_frames(info.frames)
            return None if frames is None else frames / info.samplerate
        if fmt == "pcm":
            if not hint.sample_rate or not hint.channels:
                return None
            return len(data) / (2 * hint.channels * hint.sample_rate)
        if fmt == "aac" and (seconds := _adts_seconds(data)) is not None:
            return seconds
        return _av_seconds(data, fmt) if fmt in DEMUXERS else None
    except Exception:  # noqa: BLE001 - an unreadable header just means "unknown"; decode() reports it
        return None
