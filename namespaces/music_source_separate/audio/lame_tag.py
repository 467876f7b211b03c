"""The LAME part of an MP3 stream's Info frame: its encoder delay, rewritten for very short outputs.

FFmpeg cuts a decoded MP3 to the samples encoded with two numbers from the tag: it skips
`delay + 529` samples at the start and drops the padding at the end. It carries the skip from the
first packet on, but a later packet that carries the end's cut resets what is left of the skip to
nothing. At the MPEG-2 rates (24 kHz and below) a frame holds 576 samples, so the skip (1105)
runs into the second frame, and an output of under 47 samples ends in that same frame: FFmpeg then
gives back 529 samples too many. Such an output is encoded after `lead` samples of silence, and the
tag's delay says so: the skip then ends on a frame boundary, and every decoder gives back exactly
the samples asked for (libsndfile's mpg123 reads the same field).

The layout is LAME's "Mp3 Info Tag rev 1": after "Info"/"Xing", flags, frames, bytes, a 100-byte
TOC and quality comes "LAME..."; 21 bytes on, 12 bits of delay and 12 of padding; 34 bytes on, the
tag's CRC (CRC-16/ARC of every byte of the frame before it).
"""

from __future__ import annotations

DECODER_DELAY = 529  # samples an MP3 decoder's synthesis adds (528 + 1), beside the encoder's delay
_LAME_PART = 4 + 4 + 4 + 4 + 100 + 4  # "Info", flags, frames, bytes, TOC, quality: where "LAME" starts
_DELAYS, _TAG_CRC = 21, 34  # offsets in LAME's part


class TagError(ValueError):
    """The stream does not start with LAME's Info frame."""


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc16_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/ARC (reflected 0x8005, initial 0): the CRC of LAME's tag."""
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def lame_part(data: bytes | bytearray, first_frame: int) -> int:
    """Where "LAME" starts in the first frame (its first `first_frame` bytes)."""
    frame = bytes(data[:first_frame])
    start = max(frame.find(b"Info"), frame.find(b"Xing"))
    if start < 0 or frame[start + _LAME_PART:start + _LAME_PART + 4] != b"LAME":
        raise TagError("the first frame holds no LAME Info tag")
    return start + _LAME_PART


def delays(data: bytes | bytearray, first_frame: int) -> tuple[int, int]:
    """The tag's (encoder delay, padding) in samples."""
    at = lame_part(data, first_frame) + _DELAYS
    value = int.from_bytes(data[at:at + 3], "big")
    return value >> 12, value & 0xFFF


def lead_for(samples: int, delay: int, per_frame: int) -> int:
    """Silence to put before `samples` so FFmpeg's cut at the end never meets its skip (0: none)."""
    skip = delay + DECODER_DELAY
    if skip < per_frame or (skip + samples) // per_frame != skip // per_frame:
        return 0
    return per_frame - skip % per_frame


def with_delay(data: bytes, first_frame: int, delay: int) -> bytes:
    """`data` with the tag's encoder delay set to `delay` (padding kept) and the tag's CRC redone."""
    if not 0 <= delay < 4096:
        raise TagError(f"an encoder delay of {delay} samples does not fit the tag's 12 bits")
    part = lame_part(data, first_frame)
    out = bytearray(data)
    _, padding = delays(data, first_frame)
    out[part + _DELAYS:part + _DELAYS + 3] = ((delay << 12) | padding).to_bytes(3, "big")
    out[part + _TAG_CRC:part + _TAG_CRC + 2] = crc16(memoryview(out)[:part + _TAG_CRC]).to_bytes(2, "big")
    return bytes(out)
