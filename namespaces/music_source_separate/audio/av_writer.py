"""ADTS AAC, m4a (AAC in MP4) and MP3 through PyAV, written as the samples come: `encode.encode_av` is an
`AvWriter` given every sample at once, writing to memory, so the same samples give the same bytes however
they come.

Each packet reaches the file as it is encoded: an ADTS file read while it grows is whole ADTS frames from
its first byte. An m4a's index (moov) is written at the end, and its edit list set then (`mp4_edit`); an
MP3's Info frame is made exact then (`lame_tag`): neither is a file to read before `finish`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, cast

import av
import numpy as np

from .blocks import Blocks
from .formats import BIT_RATES
from .lame_tag import first_frame, lead_for, samples_per_frame, with_delays
from .mp4_edit import set_file_duration

ENCODERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"), "m4a": ("ipod", "aac")}  # muxer, codec
AAC_FRAME = 1024  # samples per AAC-LC frame; FFmpeg's encoder primes the stream with one frame
LAME_DELAY = 576  # LAME's encoder delay at these settings (FFmpeg's mp3 muxer writes it in its tag)


def check_codec(fmt: str, channels: int, sample_rate: int) -> None:
    """ValueError unless `fmt`'s encoder takes `channels` at `sample_rate`."""
    if channels not in BIT_RATES:
        raise ValueError(f"{fmt} output takes 1 or 2 channels, not {channels}")
    rates = av.codec.Codec(ENCODERS[fmt][1], "w").audio_rates
    if rates and sample_rate not in rates:
        raise ValueError(f"{fmt} cannot be encoded at {sample_rate} Hz")


def m4a_lead(frames: int) -> int:
    """Silence put before `frames` samples in an m4a so that they end on an AAC frame boundary.

    FFmpeg's MP4 demuxer trims an edit list's start to the sample (the encoder's priming frame and
    this lead) but never cuts into the end of a frame; it drops a frame that lies wholly past the
    edit, and takes the last frame of a track to be as long as the whole edit. So the samples end
    on a frame boundary, one frame of silence is muxed after them and the edit list ends before it
    (`mp4_edit.set_duration`): FFmpeg, browsers and Apple's decoders all give back exactly `frames`.
    """
    return -frames % AAC_FRAME


class AvWriter:
    """`frames` samples encoded as `fmt` ("aac", "m4a" or "mp3") into `sink` (a seekable binary file,
    readable too for m4a and mp3) as they come, in frames of the encoder's size timestamped in samples
    (negative ones: the silent lead, before the presentation starts); `finish` encodes the rest and the
    tail and completes the file."""

    def __init__(self, sink: BinaryIO, fmt: str, channels: int, sample_rate: int, frames: int,
                 owns_sink: bool = False) -> None:
        muxer, codec = ENCODERS[fmt]
        check_codec(fmt, channels, sample_rate)
        self.fmt, self.frames, self.sample_rate = fmt, frames, sample_rate
        self._sink, self._owns_sink = sink, owns_sink
        self._channels, self._layout = channels, "mono" if channels == 1 else "stereo"
        lead, self._tail = 0, 0
        options = {}
        if fmt == "mp3":  # as audio/lame.py does, for the same reason (lame_tag)
            lead = lead_for(frames, LAME_DELAY, samples_per_frame(sample_rate))
        if fmt == "m4a":
            lead, self._tail = m4a_lead(frames), AAC_FRAME
            options["movie_timescale"] = str(sample_rate)  # the edit list counts samples, not milliseconds
        if fmt == "aac":
            options["flush_packets"] = "1"  # each packet to the file as it is muxed: a reader gets whole frames
        self.lead = lead
        self._packets = 0
        self._container = av.open(sink, "w", format=muxer, options=options)
        self._open = True
        try:
            self._stream = cast(av.AudioStream, self._container.add_stream(codec, rate=sample_rate,
                                                                           layout=self._layout))
            self._stream.bit_rate = BIT_RATES[channels]
            self._stream.codec_context.open()  # frame_size is known once the encoder is open
            self._blocks = Blocks(self._stream.codec_context.frame_size)
            self._pts = -lead
            self.write(np.zeros((channels, lead), np.float32))
        except BaseException:
            self.close()
            raise

    def write(self, pcm: np.ndarray) -> None:
        """float32 (channels, n) in [-1, 1]; encoded a whole frame at a time."""
        for block in self._blocks.push(pcm):
            self._encode(block)

    def _encode(self, block: np.ndarray | None) -> None:
        frame = None
        if block is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self._layout)
            frame.sample_rate = self.sample_rate
            frame.time_base = Fraction(1, self.sample_rate)
            frame.pts = self._pts
            self._pts += block.shape[1]
        packets = self._stream.encode(frame)
        self._packets += len(packets)
        self._container.mux(packets)

    def finish(self) -> None:
        """The samples held and the tail encoded, the encoder flushed and the file completed."""
        self.write(np.zeros((self._channels, self._tail), np.float32))
        for block in self._blocks.rest():
            self._encode(block)
        self._encode(None)
        self._open = False
        self._container.close()
        if self.fmt == "m4a":  # the edit list ends with the samples, before the frame of silence after them
            set_file_duration(self._sink, self.frames)
        if self.fmt == "mp3":
            self._exact_mp3_tag()

    def _exact_mp3_tag(self) -> None:
        """The muxer's padding can be short (by 46 samples for 1153 at 44.1 kHz): the tag says what the
        frames written hold beyond the delay and the samples (the file read whole: PyAV's MP3 is written
        to memory, `encode.encode_av`)."""
        end = self._sink.tell()
        self._sink.seek(0)
        data = self._sink.read()
        frame, delay = first_frame(data), LAME_DELAY + self.lead
        padding = self._packets * samples_per_frame(self.sample_rate) - delay - self.frames
        self._sink.seek(frame.start)
        self._sink.write(with_delays(data, frame, delay, padding)[frame])
        self._sink.seek(end)

    def close(self) -> None:
        """Also on a failure (the file is then a failed job's, never read as a whole)."""
        try:
            if self._open:
                self._open = False
                self._container.close()
        finally:
            if self._owns_sink:
                self._sink.close()


def av_writer(target: Path | str, fmt: str, channels: int, sample_rate: int, frames: int) -> AvWriter:
    """An `AvWriter` of `frames` samples to the file `target`, unbuffered: each packet is on disk once muxed."""
    sink = open(target, "w+b", buffering=0)  # noqa: SIM115 - the writer closes it
    try:
        return AvWriter(sink, fmt, channels, sample_rate, frames, owns_sink=True)
    except BaseException:
        sink.close()
        raise

