"""float32 samples to the bytes of an output format: 16-bit wav and flac, mp3, ADTS aac and m4a."""

from __future__ import annotations

import io
import numbers
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import av
import numpy as np
import soundfile as sf

from .formats import FORMATS as FORMATS  # the formats encode() writes
from .lame import lame
from .lame_tag import first_frame, lead_for, samples_per_frame, with_delays
from .mp4_edit import set_duration

_ENCODERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"), "m4a": ("ipod", "aac")}  # muxer, codec
BIT_RATES = {1: 128_000, 2: 192_000}  # of mp3, aac and m4a, by channel count
AAC_FRAME = 1024  # samples per AAC-LC frame; FFmpeg's encoder primes the stream with one frame
LAME_DELAY = 576  # LAME's encoder delay at these settings (FFmpeg's mp3 muxer writes it in its tag)


def _encode_soundfile(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """16-bit wav or flac, each sample rounded to the nearest step (libsndfile's own conversion of
    floats rounds for flac but floors for wav: half a step of bias, and 10 dB more noise)."""
    ints = np.clip(np.rint(pcm.T * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, ints, sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def _blocks(parts: list[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Blocks of `size` samples of `parts` joined end to end (the last may be shorter); only a block
    that spans two parts is copied, so silence around the samples costs no copy of them."""
    pending: list[np.ndarray] = []
    held = 0
    for part in parts:
        at = 0
        while at < part.shape[1]:
            take = min(size - held, part.shape[1] - at)
            if take == size:
                yield part[:, at:at + size]
            else:
                pending.append(part[:, at:at + take])
                held += take
                if held == size:
                    yield np.concatenate(pending, axis=1)
                    pending, held = [], 0
            at += take
    if held:
        yield np.concatenate(pending, axis=1)


def _audio_frames(parts: list[np.ndarray], sample_rate: int, layout: str, size: int,
                  first_pts: int = 0) -> Iterator[av.AudioFrame]:
    """fltp frames of the encoder's frame size from `parts` played one after another (the last
    frame may be shorter), timestamped in samples from `first_pts` (negative: samples before the
    presentation starts)."""
    start = first_pts
    for block in _blocks(parts, size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = start
        start += block.shape[1]
        yield frame


def _check_codec(fmt: str, channels: int, sample_rate: int) -> None:
    if channels not in BIT_RATES:
        raise ValueError(f"{fmt} output takes 1 or 2 channels, not {channels}")
    rates = av.codec.Codec(_ENCODERS[fmt][1], "w").audio_rates
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


def encode_av(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Through PyAV: MP3 (libmp3lame; the mp3 muxer writes the LAME header with delay and padding,
    made exact here), AAC (FFmpeg's native encoder) in ADTS, or in MP4 with an edit list (m4a)."""
    muxer, codec = _ENCODERS[fmt]
    channels = pcm.shape[0]
    _check_codec(fmt, channels, sample_rate)
    layout = "mono" if channels == 1 else "stereo"
    lead, tail, frames = 0, 0, pcm.shape[1]
    options = {}
    per_frame = samples_per_frame(sample_rate)  # MP3's
    if fmt == "mp3":  # as audio/lame.py does, for the same reason (lame_tag)
        lead = lead_for(frames, LAME_DELAY, per_frame)
    if fmt == "m4a":
        lead, tail = m4a_lead(frames), AAC_FRAME
        options["movie_timescale"] = str(sample_rate)  # the edit list counts samples, not milliseconds
    parts = [np.zeros((channels, lead), dtype=np.float32), pcm, np.zeros((channels, tail), dtype=np.float32)]
    buffer = io.BytesIO()
    packets = 0
    with av.open(buffer, "w", format=muxer, options=options) as container:
        stream = cast(av.AudioStream, container.add_stream(codec, rate=sample_rate, layout=layout))
        stream.bit_rate = BIT_RATES[channels]
        stream.codec_context.open()  # frame_size is known once the encoder is open
        for frame in _audio_frames(parts, sample_rate, layout, stream.codec_context.frame_size, -lead):
            encoded = stream.encode(frame)
            packets += len(encoded)
            container.mux(encoded)
        encoded = stream.encode(None)
        packets += len(encoded)
        container.mux(encoded)
    if fmt == "m4a":  # the edit list ends with the samples, before the frame of silence after them
        return set_duration(buffer.getvalue(), frames)
    if fmt == "mp3":  # the muxer's padding can be short (by 46 samples for 1153 at 44.1 kHz):
        # the tag says what the frames written hold beyond the delay and the samples
        data, delay = buffer.getvalue(), LAME_DELAY + lead
        padding = packets * per_frame - delay - frames
        return with_delays(data, first_frame(data), delay, padding)
    return buffer.getvalue()


def _encode_mp3(pcm: np.ndarray, sample_rate: int) -> bytes:
    """LAME directly when a LAME library loads (3x faster, same settings, LAME's own Info frame),
    else through PyAV."""
    library = lame()
    if library is None:
        return encode_av(pcm, sample_rate, "mp3")
    _check_codec("mp3", pcm.shape[0], sample_rate)
    return library.encode(pcm, sample_rate, BIT_RATES[pcm.shape[0]]).data


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """float32 (C, n) -> bytes: "wav"/"flac" 16-bit, "mp3" 128k mono/192k stereo, "aac" ADTS and
    "m4a" (AAC in MP4) 128k/192k. mp3 and m4a decode to exactly n samples; ADTS has no place to say
    so, and decodes with up to one frame more.

    Samples are clipped to [-1, 1] (NaN becomes 0). mp3, aac and m4a take 1 or 2 channels and
    the rates their encoders list (8000..48000 family); wav takes any. A format, layout
    or rate it cannot write is the caller's mistake: ValueError.
    """
    if fmt not in FORMATS:
        raise ValueError(f"output format must be one of {FORMATS}, not {fmt!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise ValueError(f"the sample rate must be an integer, not {sample_rate!r}")
    sample_rate = int(sample_rate)  # a numpy integer too: the codecs' C interfaces take int
    pcm = np.asarray(samples, dtype=np.float32)
    if pcm.ndim != 2 or pcm.shape[0] == 0:
        raise ValueError("samples must be shaped (channels, frames)")
    if fmt == "mp3" and pcm.shape[1] == 0:
        raise ValueError("an mp3 holds at least one sample (LAME's stream of none is no file FFmpeg reads)")
    pcm = np.nan_to_num(pcm, nan=0.0, posinf=1.0, neginf=-1.0)  # a copy: clipped in place
    np.clip(pcm, -1.0, 1.0, out=pcm)
    if fmt in ("wav", "flac"):
        return _encode_soundfile(pcm, sample_rate, fmt)
    if fmt == "mp3":
        return _encode_mp3(pcm, sample_rate)
    return encode_av(pcm, sample_rate, fmt)
