"""MP3 through LAME's C API (ctypes): about 3x faster than PyAV's bundled LAME, with LAME's own tag.

PyAV's wheels carry a LAME built without the optimisations of the usual builds: with the same
settings the same LAME code runs about three times slower there, and six of every seven seconds
of an MP3 output went into it. This module calls a LAME library directly instead:

- the one inside the `lameenc` wheel (a dependency: its extension module links LAME in and exports
  the whole `lame_*` API), else the system's `libmp3lame` (Debian's `libmp3lame0`);
- with the settings FFmpeg's libmp3lame encoder gives LAME for this gateway: CBR at the bit rate,
  joint stereo (or mono), quality 3 (LAME's default), the bit reservoir on, float input;
- and with LAME's Xing/"Info" frame, which LAME reserves as the first frame and fills once the
  stream is flushed (`lame_get_lametag_frame`): it records the encoder delay and padding, so
  FFmpeg, libsndfile (mpg123) and browsers decode exactly the samples encoded, no more (for
  outputs of a few samples at 24 kHz and below, see `lame_tag`).

ctypes releases the GIL for every foreign call, and the samples go in one second at a time, so an
encode never holds the GIL for more than a few milliseconds beside inference and the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .blocks import Blocks
from .lame_tag import lead_for, samples_per_frame, with_delays

QUALITY = 3  # LAME's default (and what FFmpeg's encoder leaves it at): good psychoacoustics, 2x the speed of q 0
CHUNK_SECONDS = 1  # samples handed to LAME per call: the longest the encoder holds a lock is one of these
MAX_TAG_BYTES = 2880  # the largest MP3 frame (MPEG-2.5 layer III, 160 kbps at 8 kHz): the tag fits in one
_JOINT_STEREO, _MONO = 1, 3  # LAME's MPEG_mode values

_VOID_P, _INT = ctypes.c_void_p, ctypes.c_int
_SIGNATURES: dict[str, tuple[type | None, list[type]]] = {
    "lame_init": (_VOID_P, []),
    "lame_close": (_INT, [_VOID_P]),
    "lame_set_num_channels": (_INT, [_VOID_P, _INT]),
    "lame_set_in_samplerate": (_INT, [_VOID_P, _INT]),
    "lame_set_out_samplerate": (_INT, [_VOID_P, _INT]),
    "lame_set_brate": (_INT, [_VOID_P, _INT]),
    "lame_set_quality": (_INT, [_VOID_P, _INT]),
    "lame_set_mode": (_INT, [_VOID_P, _INT]),
    "lame_set_bWriteVbrTag": (_INT, [_VOID_P, _INT]),
    "lame_set_write_id3tag_automatic": (None, [_VOID_P, _INT]),
    "lame_init_params": (_INT, [_VOID_P]),
    "lame_get_out_samplerate": (_INT, [_VOID_P]),
    "lame_get_encoder_delay": (_INT, [_VOID_P]),
    "lame_get_encoder_padding": (_INT, [_VOID_P]),
    "lame_encode_buffer_ieee_float": (_INT, [_VOID_P, _VOID_P, _VOID_P, _INT, _VOID_P, _INT]),
    "lame_encode_flush": (_INT, [_VOID_P, _VOID_P, _INT]),
    "lame_get_lametag_frame": (ctypes.c_size_t, [_VOID_P, _VOID_P, ctypes.c_size_t]),
    "get_lame_version": (ctypes.c_char_p, []),
}


class LameError(RuntimeError):
    """LAME refused the settings or failed while encoding."""


@dataclass(frozen=True)
class Mp3Stream:
    """One encoded stream and what LAME's tag says of it."""

    data: bytes
    delay: int  # samples of encoder delay before the first input sample (LAME: 576)
    padding: int  # samples appended after the last one, to fill the last frame


class Lame:
    """One LAME shared library, its functions typed."""

    def __init__(self, path: str) -> None:
        self.path = path
        library = ctypes.CDLL(path)
        for name, (result, arguments) in _SIGNATURES.items():
            function = getattr(library, name)  # AttributeError: not a (full) LAME library
            function.restype = result
            function.argtypes = arguments
        self._lib = library
        self.version = (library.get_lame_version() or b"").decode("ascii", "replace")

    def _open(self, channels: int, sample_rate: int, bit_rate: int) -> int:
        lib = self._lib
        handle = lib.lame_init()
        if not handle:
            raise LameError("lame_init failed (out of memory)")
        settings: list[tuple[Callable[..., int], int]] = [
            (lib.lame_set_num_channels, channels), (lib.lame_set_in_samplerate, sample_rate),
            (lib.lame_set_out_samplerate, sample_rate), (lib.lame_set_brate, bit_rate // 1000),
            (lib.lame_set_quality, QUALITY), (lib.lame_set_mode, _JOINT_STEREO if channels == 2 else _MONO),
            (lib.lame_set_bWriteVbrTag, 1)]
        try:
            lib.lame_set_write_id3tag_automatic(handle, 0)
            refused = any(setter(handle, value) < 0 for setter, value in settings) or lib.lame_init_params(handle) < 0
        except BaseException:  # a value ctypes cannot pass: the handle is not kept either
            lib.lame_close(handle)
            raise
        if refused:
            lib.lame_close(handle)
            raise LameError(f"LAME refuses {channels} channels at {sample_rate} Hz, {bit_rate} bit/s")
        return int(handle)

    def encode(self, pcm: np.ndarray, sample_rate: int, bit_rate: int) -> Mp3Stream:
        """float32 (channels, frames) in [-1, 1], 1 or 2 channels -> a CBR MP3 with LAME's Info frame first."""
        channels, frames = pcm.shape
        sink = io.BytesIO()
        writer = Mp3Writer(self, sink, channels, sample_rate, bit_rate, frames)
        try:
            writer.write(pcm)
            writer.finish()
        finally:
            writer.close()
        return Mp3Stream(sink.getvalue(), writer.delay + writer.lead, writer.padding)

    def writer(self, target: Path | str, channels: int, sample_rate: int, bit_rate: int, frames: int) -> Mp3Writer:
        """An MP3 of `frames` samples written to the file `target` as they come (`Mp3Writer`): the same
        bytes as `encode` of them at once."""
        sink = open(target, "wb", buffering=0)  # noqa: SIM115 - the writer closes it
        try:
            return Mp3Writer(self, sink, channels, sample_rate, bit_rate, frames, owns_sink=True)
        except BaseException:
            sink.close()
            raise


class Mp3Writer:
    """An MP3 written to `sink` (a seekable binary file) as its samples come, each of LAME's frames
    appended as LAME makes it, in one-second calls: `Lame.encode` is this writer given every sample at
    once, so the same samples give the same bytes however they come.

    The first frame is the Info frame LAME reserves, blank until `finish` writes it in place (with the
    encoder delay and padding): a reader of the file while it grows gets a valid MP3 from its first byte,
    which decodes with that blank frame's silence and LAME's delay and padding more (not yet gapless),
    and only that frame differs from the finished file."""

    def __init__(self, library: Lame, sink: BinaryIO, channels: int, sample_rate: int, bit_rate: int,
                 frames: int, owns_sink: bool = False) -> None:
        self._lib = library._lib
        self._handle = library._open(channels, sample_rate, bit_rate)
        self._sink, self._owns_sink = sink, owns_sink
        try:
            self.delay = self._lib.lame_get_encoder_delay(self._handle)
            self.lead = lead_for(frames, self.delay, samples_per_frame(sample_rate))  # silence first (lame_tag)
            self._chunk = CHUNK_SECONDS * self._lib.lame_get_out_samplerate(self._handle)
            self._room = int(1.25 * self._chunk) + 7200  # LAME's documented worst case for a call of `_chunk`
            self._buffer = ctypes.create_string_buffer(self._room)
            self._calls = Blocks(self._chunk)  # the samples in whole calls, the silent lead first
            self.padding = 0  # known once finished
            self._tag_size = 0
            self.write(np.zeros((channels, self.lead), np.float32))
        except BaseException:
            self._lib.lame_close(self._handle)
            raise

    def write(self, pcm: np.ndarray) -> None:
        """float32 (channels, n) in [-1, 1]; encoded a whole call (one second) at a time."""
        for call in self._calls.push(pcm):
            self._encode(call)

    def _encode(self, pcm: np.ndarray) -> None:
        left = np.ascontiguousarray(pcm[0], dtype=np.float32)
        right = np.ascontiguousarray(pcm[-1], dtype=np.float32)  # ignored by LAME for mono
        written = self._lib.lame_encode_buffer_ieee_float(self._handle, left.ctypes.data, right.ctypes.data,
                                                          pcm.shape[1], self._buffer, self._room)
        if written < 0:
            raise LameError(f"lame_encode_buffer_ieee_float failed ({written})")
        self._append(written)

    def _append(self, written: int) -> None:
        data = ctypes.string_at(self._buffer, written)
        if not self._tag_size and data:
            self._tag_size = len(data)  # bounded below: the Info frame comes out with the first frames
        self._sink.write(data)

    def finish(self) -> None:
        """The rest encoded and flushed, and the Info frame written in place."""
        for call in self._calls.rest():
            self._encode(call)
        written = self._lib.lame_encode_flush(self._handle, self._buffer, self._room)
        if written < 0:
            raise LameError(f"lame_encode_flush failed ({written})")
        self._append(written)
        self.padding = self._lib.lame_get_encoder_padding(self._handle)
        tag = ctypes.create_string_buffer(MAX_TAG_BYTES)
        size = self._lib.lame_get_lametag_frame(self._handle, tag, MAX_TAG_BYTES)
        if not 0 < size <= min(self._tag_size, MAX_TAG_BYTES):
            raise LameError("LAME gave no Info frame: the stream's exact length would be lost")
        frame = ctypes.string_at(tag, size)
        if self.lead:  # the silence counts as the encoder's delay: decoders skip it
            frame = with_delays(frame, slice(0, size), self.delay + self.lead)
        end = self._sink.tell()
        self._sink.seek(0)  # the frame LAME reserved at the start of the stream
        self._sink.write(frame)
        self._sink.seek(end)

    def close(self) -> None:
        """Also on a failure (the file is then a failed job's, never read as a whole)."""
        if self._handle:
            self._lib.lame_close(self._handle)
            self._handle = 0
        if self._owns_sink:
            self._sink.close()


def candidates() -> list[str]:
    """Where a LAME library may be, best first: the `lameenc` wheel's module, then the system's."""
    found = []
    spec = importlib.util.find_spec("lameenc")
    if spec is not None and spec.origin:
        found.append(spec.origin)
    system = ctypes.util.find_library("mp3lame")
    if system:
        found.append(system)
    return found


_loaded: list[Lame | None] = []
_lock = threading.Lock()


def lame() -> Lame | None:
    """The first LAME library that loads with every function this module calls (None: none does,
    and MP3 goes through PyAV); looked for once."""
    with _lock:
        if not _loaded:
            _loaded.append(_first_loadable(candidates()))
        return _loaded[0]


def _first_loadable(paths: list[str]) -> Lame | None:
    for path in paths:
        try:
            return Lame(path)
        except (OSError, AttributeError):
            continue
    return None
