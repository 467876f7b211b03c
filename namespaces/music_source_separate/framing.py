"""Byte-level framing of the accepted formats, and the walks that tell a whole file from a damaged one.

Decoders conceal damage: FFmpeg resynchronises past a broken MP3 frame, libvorbis skips a
page whose checksum fails, and both return shorter audio without an error. Separating what
is left would hand the client stems of audio it never sent, so `damage` walks the file's
own framing (RIFF chunks, Ogg pages, MPEG and ADTS frames, MP4 boxes) and names the first
place where it is cut short or broken. What framing cannot show (flipped bits inside an MP3
frame, which carries no checksum by default) is left to the decoder.
"""

from __future__ import annotations

from collections.abc import Callable

ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
ADTS_SCAN_FRAMES = 1 << 18  # bounds the header walk on hostile files of tiny frames
_MP3_KBPS = {  # layer III bit rates by bitrate index: MPEG-1, then MPEG-2 and 2.5
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATE_SHIFT = {3: 0, 2: 1, 0: 2}  # version bits -> MPEG-1, MPEG-2, MPEG-2.5 (rate halvings)
_END_TAGS = (b"APETAGEX", b"LYRICSBEGIN")  # metadata blocks players accept after the last frame
_ID3V1_BYTES = 128  # "TAG" and 125 bytes, the very end of a file
_RESYNC_BYTES = 64 * 1024  # padding or junk tolerated between the ID3 tag and the first frame
_OGG_END_OF_STREAM = 0x04


def id3_end(data: bytes, pos: int) -> int:
    """Offset just past an ID3v2 tag starting at `pos` (synchsafe size, optional footer)."""
    size = 0
    for byte in data[pos + 6:pos + 10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if len(data) > pos + 5 and data[pos + 5] & 0x10 else 0
    return pos + 10 + size + footer


def skip_id3(data: bytes) -> int:
    """Offset of the first byte after any leading ID3v2 tags."""
    pos = 0
    while data[pos:pos + 3] == b"ID3":
        pos = id3_end(data, pos)
    return pos


def mp3_frame_length(data: bytes, pos: int) -> int | None:
    """Length of the MPEG audio layer III frame whose header is at `pos`, or None if it is not one."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    index, rate_index, padding = data[pos + 2] >> 4, (data[pos + 2] >> 2) & 3, (data[pos + 2] >> 1) & 1
    if version == 1 or layer != 1 or index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    rate = (44100, 48000, 32000)[rate_index] >> _MP3_RATE_SHIFT[version]
    return (144 if mpeg1 else 72) * _MP3_KBPS[mpeg1][index] * 1000 // rate + padding


def adts_frame_length(data: bytes, pos: int) -> int | None:
    """Length of the ADTS frame at `pos` (sync 0xFFF and layer bits 00), or None if it is not one."""
    if pos + 7 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
        return None
    if (data[pos + 2] >> 2) & 0xF >= len(ADTS_RATES):
        return None
    length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
    return length if length >= 7 else None


def adts_walk(data: bytes) -> tuple[int, int, int, int]:
    """(end offset, frames, AAC blocks, sample rate) of the chain of ADTS frames after any ID3 tag.

    The end is where the chain stops: the end of the data for a whole stream, past it for
    a last frame cut short, before it where a header is missing. The walk stops after
    ADTS_SCAN_FRAMES frames (over 45 minutes even at 96 kHz).
    """
    pos, frames, blocks, rate = skip_id3(data), 0, 0, 0
    while frames < ADTS_SCAN_FRAMES and (length := adts_frame_length(data, pos)) is not None:
        frames += 1
        rate = rate or ADTS_RATES[(data[pos + 2] >> 2) & 0xF]
        blocks += (data[pos + 6] & 3) + 1
        pos += length
    return pos, frames, blocks, rate


def _first_frame(data: bytes, start: int, frame_length: Callable[[bytes, int], int | None]) -> int | None:
    """The first frame header within _RESYNC_BYTES of `start`, confirmed by the next one."""
    pos, stop = start, min(len(data), start + _RESYNC_BYTES)
    while 0 <= pos < stop:
        length = frame_length(data, pos)
        if length is not None and (pos + length + 4 > len(data) or frame_length(data, pos + length)):
            return pos
        pos = data.find(b"\xff", pos + 1, stop)
    return None


def _frames_end(data: bytes, start: int, frame_length: Callable[[bytes, int], int | None]) -> tuple[int, int]:
    """(end offset, frame count) of the chain of frames from `start`."""
    pos, count = start, 0
    while (length := frame_length(data, pos)) is not None:
        pos, count = pos + length, count + 1
    return pos, count


def _chain_end_problem(data: bytes, end: int, unit: str) -> str | None:
    """What is wrong where a chain of frames stopped at `end`: cut short, or followed by what no tag is."""
    if end > len(data):
        return f"the last {unit} is cut short ({end - len(data)} bytes missing)"
    rest = data[end:]
    if not rest or rest.startswith(_END_TAGS) or (rest[:3] == b"TAG" and len(rest) == _ID3V1_BYTES):
        return None
    return f"{unit} sync lost at byte {end} of {len(data)}"


def _xing_frames(data: bytes, pos: int) -> int | None:
    """Frame count of a Xing/Info header in the MPEG frame at `pos`, when it carries one."""
    mpeg1, mono = (data[pos + 1] >> 3) & 3 == 3, data[pos + 3] >> 6 == 3
    offset = pos + 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))
    if data[offset:offset + 4] not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(data[offset + 4:offset + 8], "big")
    return int.from_bytes(data[offset + 8:offset + 12], "big") if flags & 1 else None


def _mp3_damage(data: bytes) -> str | None:
    start = _first_frame(data, skip_id3(data), mp3_frame_length)
    if start is None:
        return "no MPEG audio frame where the stream starts"
    end, count = _frames_end(data, start, mp3_frame_length)
    if problem := _chain_end_problem(data, end, "MPEG frame"):
        return problem
    declared = _xing_frames(data, start)
    if declared is not None and count - 1 < declared:  # the Xing/Info frame itself holds no audio
        return f"{count - 1} MPEG frames of the {declared} its header declares"
    return None


def _adts_damage(data: bytes) -> str | None:
    end, frames, _, _ = adts_walk(data)
    if frames == 0:
        return "no ADTS frame where the stream starts"
    if frames >= ADTS_SCAN_FRAMES:
        return None  # longer than any duration limit; the decoder's own bounds apply
    return _chain_end_problem(data, end, "ADTS frame")


def _ogg_damage(data: bytes) -> str | None:
    pos, flags = 0, 0
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
        segments = data[pos + 26]
        table = data[pos + 27:pos + 27 + segments]
        flags = data[pos + 5]
        pos += 27 + segments + sum(table)
        if len(table) < segments:
            break
    if pos == len(data):
        return None if flags & _OGG_END_OF_STREAM else "the stream ends without its end-of-stream page"
    if pos > len(data) or data[pos:pos + 4] == b"OggS":
        return "the last Ogg page is cut short"
    return f"Ogg page sync lost at byte {pos} of {len(data)}"


def _mp4_damage(data: bytes) -> str | None:
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        elif size == 0:  # the last box runs to the end of the file
            size = len(data) - pos
        if size < 8:
            return f"MP4 box of {size} bytes at byte {pos}"
        pos += size
    if pos != len(data):
        box = "box" if pos > len(data) else "box header"
        return f"the last MP4 {box} is cut short ({abs(pos - len(data))} bytes)"
    return None


def _wav_damage(data: bytes) -> str | None:
    """A RIFF WAVE whose `data` chunk claims more bytes than the file holds was cut short
    (0 and 0xFFFFFFFF mean "until the end", as streams write). RF64 keeps its sizes elsewhere."""
    if data[:4] != b"RIFF":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"data":
            if size not in (0, 0xFFFFFFFF) and pos + 8 + size > len(data):
                return f"{size} data bytes declared, {len(data) - pos - 8} present"
            return None
        pos += 8 + size + (size & 1)
    return None


_CHECKS: dict[str, Callable[[bytes], str | None]] = {
    "wav": _wav_damage, "ogg": _ogg_damage, "mp3": _mp3_damage, "aac": _adts_damage, "mp4": _mp4_damage,
}


def damage(data: bytes, fmt: str) -> str | None:
    """Why the framing of `data` (sniffed as `fmt`) shows it cut short or broken, or None.

    FLAC needs no walk here: libFLAC checks every frame's CRC and the decoder's frame count
    is compared with STREAMINFO after decoding. Raw PCM has no framing to check.
    """
    check = _CHECKS.get(fmt)
    return check(data) if check else None
