"""Byte-level framing of the accepted formats, and the walks that tell a whole file from a damaged one.

Decoders conceal damage: FFmpeg resynchronises past a broken MP3 frame, libvorbis skips a
page whose checksum fails, and both return shorter audio without an error. Separating what
is left would hand the client stems of audio it never sent, so `whole` walks the file's
own framing (RIFF chunks, Ogg pages, MPEG and ADTS frames, MP4 boxes) and names the first
place where it is cut short or broken. What framing cannot show (flipped bits inside an MP3
frame, which carries no checksum by default) is left to the decoder.
"""

from __future__ import annotations

from collections.abc import Callable

ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
ADTS_SCAN_FRAMES = 1 << 21  # bounds the header walk on hostile files of tiny frames: past a job's 4 hours at 96 kHz
_MP3_KBPS = {  # layer III bit rates by bitrate index: MPEG-1, then MPEG-2 and 2.5
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATE_SHIFT = {3: 0, 2: 1, 0: 2}  # version bits -> MPEG-1, MPEG-2, MPEG-2.5 (rate halvings)
_RESYNC_BYTES = 64 * 1024  # padding or junk tolerated between the ID3 tag and the first frame
_MAX_BLOCKS = 4096  # top-level MP4 boxes, RIFF chunks before `data`, leading ID3 tags: real files have a few
_OGG_BEGIN_OF_STREAM = 0x02
_OGG_END_OF_STREAM = 0x04


def id3_end(data: bytes, pos: int) -> int:
    """Offset just past an ID3v2 tag starting at `pos` (synchsafe size, optional footer)."""
    size = 0
    for byte in data[pos + 6:pos + 10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if len(data) > pos + 5 and data[pos + 5] & 0x10 else 0
    return pos + 10 + size + footer


def skip_id3(data: bytes) -> int:
    """Offset of the first byte after the leading ID3v2 tags (at most _MAX_BLOCKS of them)."""
    pos, tags = 0, 0
    while data[pos:pos + 3] == b"ID3" and tags < _MAX_BLOCKS:
        pos, tags = id3_end(data, pos), tags + 1
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
    ADTS_SCAN_FRAMES frames (over 6 hours even at 96 kHz).
    """
    pos, frames, blocks, rate = skip_id3(data), 0, 0, 0
    while frames < ADTS_SCAN_FRAMES and (length := adts_frame_length(data, pos)) is not None:
        frames += 1
        rate = rate or ADTS_RATES[(data[pos + 2] >> 2) & 0xF]
        blocks += (data[pos + 6] & 3) + 1
        pos += length
    return pos, frames, blocks, rate


class Damaged(ValueError):
    """The framing shows the file cut short or broken; the message says where."""


def _first_frame(data: bytes, start: int, frame_length: Callable[[bytes, int], int | None]) -> int | None:
    """The first frame header within _RESYNC_BYTES of `start`, confirmed by the next one."""
    pos, stop = start, min(len(data), start + _RESYNC_BYTES)
    while 0 <= pos < stop:
        length = frame_length(data, pos)
        if length is not None and (pos + length + 4 > len(data) or frame_length(data, pos + length)):
            return pos
        pos = data.find(b"\xff", pos + 1, stop)
    return None


def _tags_start(data: bytes) -> int:
    """Where the metadata a player skips at the end of an MPEG stream begins (the end if none):
    ID3v1 (with its "TAG+" extension), APE tags (footer, optional header), Lyrics3 v1 and v2,
    and an ID3v2 tag appended with its footer."""
    end = len(data)
    for _ in range(4):  # each kind once, in any order
        if end >= 128 and data[end - 128:end - 125] == b"TAG":
            end -= 128
            if data[end - 227:end - 223] == b"TAG+":
                end -= 227
        elif data[end - 32:end - 24] == b"APETAGEX":
            size = int.from_bytes(data[end - 20:end - 16], "little")
            header = 32 if data[end - 9] & 0x80 else 0  # flags bit 31: the tag also has a header
            end -= size + header
        elif data[end - 9:end] == b"LYRICS200" and data[end - 15:end - 9].isdigit():
            end -= int(data[end - 15:end - 9]) + 15
        elif data[end - 9:end] == b"LYRICSEND":
            begin = data.rfind(b"LYRICSBEGIN", max(0, end - 5100), end)
            end = begin if begin >= 0 else end
        elif data[end - 10:end - 7] == b"3DI":  # an ID3v2 footer: the tag ends the file
            end -= id3_end(data, end - 10) - (end - 10)  # header, body and footer
        else:
            break
    return max(end, 0)


def _frame_runs(data: bytes, start: int, end: int, frame_length: Callable[[bytes, int], int | None],
                max_frames: int | None) -> tuple[list[tuple[int, int]], int, int]:
    """(runs of whole frames as (start, stop), frame count, where the walk stopped), stepping
    over ID3v2 tags between frames as concatenated files carry them, and stopping after
    `max_frames` frames when given."""
    runs, pos, count, run_start, tags = [], start, 0, start, 0
    while pos < end and (max_frames is None or count < max_frames):
        if (length := frame_length(data, pos)) is not None:
            pos, count = pos + length, count + 1
        elif data[pos:pos + 3] == b"ID3" and tags < _MAX_BLOCKS:
            runs.append((run_start, pos))
            pos = run_start = id3_end(data, pos)
            tags += 1
        else:
            break
    runs.append((run_start, min(pos, end)))
    return [(a, b) for a, b in runs if b > a], count, pos


def _chain(data: bytes, start: int | None, frame_length: Callable[[bytes, int], int | None],
           unit: str, max_frames: int | None = None) -> tuple[bytes | memoryview, int]:
    """The stream as the decoder should see it (leading tags, then the frames, without tags
    between or after them) and the frame count; Damaged where the frames stop short of the tags.
    A stream of `max_frames` frames or more comes back as it is, its length being past any limit."""
    if start is None:
        raise Damaged(f"no {unit} where the stream starts")
    end = _tags_start(data)
    runs, count, stopped = _frame_runs(data, start, end, frame_length, max_frames)
    if max_frames is not None and count >= max_frames:
        return data, count
    if stopped > end:
        raise Damaged(f"the last {unit} is cut short ({stopped - end} bytes missing)")
    if stopped < end:
        raise Damaged(f"{unit} sync lost at byte {stopped} of {len(data)}")
    if runs == [(start, end)]:  # at most tags after the frames: the frames read in place, not copied
        return (data if end == len(data) else memoryview(data)[:end]), count
    return data[:start] + b"".join(data[a:b] for a, b in runs), count


def _xing_frames(data: bytes, pos: int) -> int | None:
    """Frame count of a Xing/Info header in the MPEG frame at `pos`, when it carries one."""
    mpeg1, mono = (data[pos + 1] >> 3) & 3 == 3, data[pos + 3] >> 6 == 3
    offset = pos + 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))
    if data[offset:offset + 4] not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(data[offset + 4:offset + 8], "big")
    return int.from_bytes(data[offset + 8:offset + 12], "big") if flags & 1 else None


def _mp3(data: bytes) -> bytes | memoryview:
    start = _first_frame(data, skip_id3(data), mp3_frame_length)
    stream, count = _chain(data, start, mp3_frame_length, "MPEG frame")
    declared = _xing_frames(data, start) if start is not None else None
    # Encoders disagree on whether the count includes the Xing/Info frame itself: one frame of slack.
    if declared is not None and count < declared:
        raise Damaged(f"{count - 1} MPEG frames of the {declared} its header declares")
    return stream


def _adts(data: bytes) -> bytes | memoryview:
    start = skip_id3(data)
    first = start if adts_frame_length(data, start) else None
    # Past ADTS_SCAN_FRAMES the stream is longer than any duration limit; the decoder's bounds apply.
    return _chain(data, first, adts_frame_length, "ADTS frame", ADTS_SCAN_FRAMES)[0]


def _ogg(data: bytes) -> bytes:
    pos, flags, ended = 0, 0, False
    while pos + 27 <= len(data) and data[pos:pos + 4] == b"OggS":
        segments, flags = data[pos + 26], data[pos + 5]
        if flags & _OGG_BEGIN_OF_STREAM and ended:
            raise Damaged("chained Ogg streams (one after another) are not accepted: send one stream")
        ended = ended or bool(flags & _OGG_END_OF_STREAM)
        table = data[pos + 27:pos + 27 + segments]
        pos += 27 + segments + sum(table)
        if len(table) < segments:
            break
    if pos == len(data):
        if not flags & _OGG_END_OF_STREAM:
            raise Damaged("the stream ends without its end-of-stream page")
        return data
    if pos > len(data) or data[pos:pos + 4] == b"OggS":
        raise Damaged("the last Ogg page is cut short")
    raise Damaged(f"Ogg page sync lost at byte {pos} of {len(data)}")


def _mp4(data: bytes) -> bytes:
    pos, boxes, kinds = 0, 0, set()
    while pos + 8 <= len(data):
        boxes += 1
        if boxes > _MAX_BLOCKS:
            raise Damaged(f"more than {_MAX_BLOCKS} top-level MP4 boxes")
        size, kinds = int.from_bytes(data[pos:pos + 4], "big"), kinds | {data[pos + 4:pos + 8]}
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        elif size == 0:  # the last box runs to the end of the file
            size = len(data) - pos
        if size < 8:
            raise Damaged(f"MP4 box of {size} bytes at byte {pos}")
        pos += size
    if pos != len(data):
        box = "box" if pos > len(data) else "box header"
        raise Damaged(f"the last MP4 {box} is cut short ({abs(pos - len(data))} bytes)")
    if b"moov" not in kinds:
        raise Damaged("no `moov` box: the MP4 index is missing")
    return data


def _wav(data: bytes) -> bytes:
    """A RIFF WAVE whose `data` chunk claims more bytes than the file holds was cut short.
    Streaming writers leave 0, 0xFFFFFFFF or a value near 2 GiB (arecord: 0x7FFFFF00) to mean
    "until the end"; decoders read to the end of such files. RF64 keeps its sizes elsewhere."""
    if data[:4] != b"RIFF":
        return data
    pos, chunks = 12, 0
    while pos + 8 <= len(data) and chunks < _MAX_BLOCKS:
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk == b"data":
            if size != 0 and size < _WAV_UNTIL_END and pos + 8 + size > len(data):
                raise Damaged(f"{size} data bytes declared, {len(data) - pos - 8} present")
            return data
        pos, chunks = pos + 8 + size + (size & 1), chunks + 1
    if chunks >= _MAX_BLOCKS:
        raise Damaged(f"more than {_MAX_BLOCKS} chunks before the audio")
    return data


_WAV_UNTIL_END = 0x7FFFF000
_WALKS: dict[str, Callable[[bytes], bytes | memoryview]] = {
    "wav": _wav, "ogg": _ogg, "mp3": _mp3, "aac": _adts, "mp4": _mp4}


def whole(data: bytes, fmt: str) -> bytes | memoryview:
    """The bytes to decode when the framing of `data` (sniffed as `fmt`) shows it whole; else Damaged.

    MPEG and ADTS streams come back without the tags between or after their frames, which
    decoders would otherwise try to play (a view of `data` where only tags follow the frames, a copy
    where tags stand between them). FLAC needs no walk: libFLAC checks every frame's
    CRC, and the decoded frame count is compared with STREAMINFO afterwards. Raw PCM has no
    framing to check.
    """
    walk = _WALKS.get(fmt)
    return walk(data) if walk else data
