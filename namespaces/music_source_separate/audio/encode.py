"""float32 samples to the bytes of an output format: 16-bit wav and flac, mp3 and ADTS aac."""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import av
import numpy as np
import soundfile as sf

from .formats import FORMATS as FORMATS  # the formats encode() writes

_ENCODERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac")}  # muxer, codec
_BIT_RATES = {1: 128_000, 2: 192_000}  # by channel count


def _encode_soundfile(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, pcm.T, sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def _audio_frames(pcm: np.ndarray, sample_rate: int, layout: str, size: int) -> Iterator[av.AudioFrame]:
    """fltp frames of the encoder's frame size (the last may be shorter), timestamped in samples."""
    for start in range(0, pcm.shape[1], size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start:start + size]),
                                           format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.time_base = Fraction(1, sample_rate)
        frame.pts = start
        yield frame


def _encode_av(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """MP3 (libmp3lame, mp3 muxer: LAME header with delay/padding) or AAC (native encoder, ADTS)."""
    muxer, codec = _ENCODERS[fmt]
    channels = pcm.shape[0]
    if channels not in _BIT_RATES:
        raise ValueError(f"{fmt} output takes 1 or 2 channels, not {channels}")
    rates = av.codec.Codec(codec, "w").audio_rates
    if rates and sample_rate not in rates:
        raise ValueError(f"{fmt} cannot be encoded at {sample_rate} Hz")
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as container:
        stream = cast(av.AudioStream, container.add_stream(codec, rate=sample_rate, layout=layout))
        stream.bit_rate = _BIT_RATES[channels]
        stream.codec_context.open()  # frame_size is known once the encoder is open
        for frame in _audio_frames(pcm, sample_rate, layout, stream.codec_context.frame_size):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """float32 (C, n) -> bytes: "wav"/"flac" 16-bit, "mp3" 128k mono/192k stereo, "aac" ADTS 128k/192k.

    Samples are clipped to [-1, 1] (NaN becomes 0). mp3 and aac take 1 or 2 channels and
    the rates their encoders list (8000..48000 family); wav takes any. A format, layout
    or rate it cannot write is the caller's mistake: ValueError.
    """
    if fmt not in FORMATS:
        raise ValueError(f"output format must be one of {FORMATS}, not {fmt!r}")
    pcm = np.asarray(samples, dtype=np.float32)
    if pcm.ndim != 2 or pcm.shape[0] == 0:
        raise ValueError("samples must be shaped (channels, frames)")
    pcm = np.clip(np.nan_to_num(pcm, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    if fmt in ("wav", "flac"):
        return _encode_soundfile(pcm, sample_rate, fmt)
    return _encode_av(pcm, sample_rate, fmt)
