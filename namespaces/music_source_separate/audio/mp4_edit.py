"""The length of an MP4's single audio track, as its edit list presents it: set after muxing.

FFmpeg's MP4 muxer makes the edit list span every sample it was given. An m4a of this gateway is
muxed with one frame of silence after the samples (see `av_writer.m4a_lead`), and the edit list must
end where the samples do: this rewrites the edit's duration, and the track's and the movie's
durations that state the same length, walking the boxes (never searching bytes, which the audio
data could contain); in a file, only its moov box is read and written again.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

_CONTAINERS = {b"moov", b"trak", b"edts"}  # the boxes on the way to mvhd, tkhd and elst
_EDITED = {b"mvhd", b"tkhd", b"elst"}


class Mp4Error(ValueError):
    """The bytes are not the MP4 FFmpeg's muxer writes: a box is cut short or missing."""


def _header(head: bytes | bytearray, offset: int, end: int) -> tuple[bytes, int, int]:
    """(type, offset of the payload, end) of the box whose first 16 bytes (or fewer, at `end`) are `head`."""
    size = int.from_bytes(head[0:4], "big")
    kind = bytes(head[4:8])
    header = 8
    if size == 1:
        size, header = int.from_bytes(head[8:16], "big"), 16
    elif size == 0:
        size = end - offset
    if size < header or offset + size > end:
        raise Mp4Error(f"the {kind!r} box at byte {offset} is cut short")
    return kind, offset + header, offset + size


def _boxes(data: bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset of the payload, end) of each box in data[start:end]."""
    offset = start
    while offset + 8 <= end:
        kind, payload, box_end = _header(data[offset:offset + 16], offset, end)
        yield kind, payload, box_end
        offset = box_end


def _put(data: bytearray, offset: int, value: int, width: int) -> None:
    data[offset:offset + width] = value.to_bytes(width, "big")


def _set_header_duration(data: bytearray, payload: int, kind: bytes, duration: int) -> None:
    """mvhd and tkhd: version and flags, two times, then (tkhd: a track id and a reserved word) the duration."""
    wide = data[payload] == 1
    offset = payload + 4 + (16 if wide else 8) + (8 if kind == b"tkhd" else 4)
    _put(data, offset, duration, 8 if wide else 4)


def _set_edit_duration(data: bytearray, payload: int, duration: int) -> None:
    wide = data[payload] == 1
    if int.from_bytes(data[payload + 4:payload + 8], "big") != 1:
        raise Mp4Error("the edit list does not hold exactly one edit")
    _put(data, payload + 8, duration, 8 if wide else 4)


def _edit(data: bytearray, start: int, end: int, duration: int, found: set[bytes]) -> None:
    for kind, payload, box_end in _boxes(data, start, end):
        if kind in _CONTAINERS:
            _edit(data, payload, box_end, duration, found)
        elif kind in (b"mvhd", b"tkhd"):
            _set_header_duration(data, payload, kind, duration)
            found.add(kind)
        elif kind == b"elst":
            _set_edit_duration(data, payload, duration)
            found.add(kind)


def set_file_duration(mp4: BinaryIO, duration: int) -> None:
    """The seekable, readable and writable file `mp4` (one track, one edit) made to present `duration`
    units of the movie's timescale, in place: only its moov box is read and written again."""
    end = mp4.seek(0, io.SEEK_END)
    offset = 0
    found: set[bytes] = set()
    while offset + 8 <= end:
        mp4.seek(offset)
        kind, payload, box_end = _header(mp4.read(16), offset, end)
        if kind == b"moov":
            mp4.seek(offset)
            box = bytearray(mp4.read(box_end - offset))
            _edit(box, payload - offset, len(box), duration, found)
            mp4.seek(offset)
            mp4.write(box)
        offset = box_end
    mp4.seek(end)
    if found != _EDITED:
        raise Mp4Error(f"no {sorted(_EDITED - found)} box in the MP4")


def set_duration(mp4: bytes, duration: int) -> bytes:
    """`mp4` (one track, one edit) presenting `duration` units of the movie's timescale."""
    edited = io.BytesIO(mp4)
    set_file_duration(edited, duration)
    return edited.getvalue()
