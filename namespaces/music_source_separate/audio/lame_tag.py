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
tag's CRC (CRC-16/ARC of every byte of the frame before it). FFmpeg's mp3 muxer writes the same
tag (its encoder string "Lavf..."), in the first frame after its ID3v2 tag.
"""

from __future__ import annotations

DECODER_DELAY = 529  # samples an MP3 decoder's synthesis adds (528 + 1), beside the encoder's delay
_KBPS = {True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
         False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}  # MPEG-2 and 2.5
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
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


def samples_per_frame(sample_rate: int) -> int:
    """Samples in one layer III frame: 1152 for MPEG-1 (32 kHz and up), 576 for MPEG-2 and 2.5."""
    return 1152 if sample_rate >= 32000 else 576


def first_frame(data: bytes | bytearray) -> slice:
    """Where the stream's first MPEG layer III frame lies, past an ID3v2 tag if there is one."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | data[9] & 0x7F
        start = 10 + size + (10 if data[5] & 0x10 else 0)  # a footer, when its flag says so
    header = int.from_bytes(data[start:start + 4], "big")
    version, kbps, rate = (header >> 19) & 3, (header >> 12) & 15, (header >> 10) & 3
    if header >> 21 != 0x7FF or (header >> 17) & 3 != 1 or version == 1 or kbps in (0, 15) or rate == 3:
        raise TagError("the stream does not start with an MPEG layer III frame")
    mpeg1 = version == 3
    per_kbit = 144 if mpeg1 else 72  # bytes per kbit/s per kHz: samples per frame / 8
    length = per_kbit * _KBPS[mpeg1][kbps] * 1000 // _RATES[version][rate]
    return slice(start, start + length + ((header >> 9) & 1))


def lame_part(data: bytes | bytearray, frame: slice) -> int:
    """Where "LAME" (or FFmpeg's "Lavf") starts in the first frame, which lies at `frame`."""
    body = bytes(data[frame])
    start = max(body.find(b"Info"), body.find(b"Xing"))
    if start < 0 or body[start + _LAME_PART:start + _LAME_PART + 4] not in (b"LAME", b"Lavf", b"Lavc"):
        raise TagError("the first frame holds no LAME Info tag")
    return frame.start + start + _LAME_PART


def delays(data: bytes | bytearray, frame: slice) -> tuple[int, int]:
    """The tag's (encoder delay, padding) in samples."""
    at = lame_part(data, frame) + _DELAYS
    value = int.from_bytes(data[at:at + 3], "big")
    return value >> 12, value & 0xFFF


def lead_for(samples: int, delay: int, per_frame: int) -> int:
    """Silence to put before `samples` so FFmpeg's cut at the end never meets its skip (0: none)."""
    skip = delay + DECODER_DELAY
    if skip < per_frame or (skip + samples) // per_frame != skip // per_frame:
        return 0
    return per_frame - skip % per_frame


def with_delays(data: bytes, frame: slice, delay: int, padding: int | None = None) -> bytes:
    """`data` with the tag's encoder delay and padding set (padding None: kept) and its CRC redone."""
    part = lame_part(data, frame)
    if padding is None:
        _, padding = delays(data, frame)
    if not (0 <= delay < 4096 and 0 <= padding < 4096):
        raise TagError(f"a delay of {delay} and padding of {padding} samples do not fit the tag's 12 bits")
    out = bytearray(data)
    out[part + _DELAYS:part + _DELAYS + 3] = ((delay << 12) | padding).to_bytes(3, "big")
    crc = crc16(memoryview(out)[frame.start:part + _TAG_CRC])
    out[part + _TAG_CRC:part + _TAG_CRC + 2] = crc.to_bytes(2, "big")
    return bytes(out)
