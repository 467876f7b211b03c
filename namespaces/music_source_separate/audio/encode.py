"""float32 samples to the bytes of an output format: 16-bit wav and flac, mp3, ADTS aac and m4a."""

from __future__ import annotations

import io
import numbers

import numpy as np
import soundfile as sf

from .av_writer import AvWriter, check_codec
from .formats import BIT_RATES
from .formats import FORMATS as FORMATS  # the formats encode() writes
from .lame import lame


def _encode_soundfile(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """16-bit wav or flac, each sample rounded to the nearest step (libsndfile's own conversion of
    floats rounds for flac but floors for wav: half a step of bias, and 10 dB more noise)."""
    ints = np.clip(np.rint(pcm.T * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, ints, sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()


def encode_av(pcm: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Through PyAV: MP3 (libmp3lame; the mp3 muxer writes the LAME header with delay and padding,
    made exact here), AAC (FFmpeg's native encoder) in ADTS, or in MP4 with an edit list (m4a): an
    `AvWriter` given every sample at once, writing to memory."""
    sink = io.BytesIO()
    writer = AvWriter(sink, fmt, pcm.shape[0], sample_rate, pcm.shape[1])
    try:
        writer.write(pcm)
        writer.finish()
    finally:
        writer.close()
    return sink.getvalue()


def _encode_mp3(pcm: np.ndarray, sample_rate: int) -> bytes:
    """LAME directly when a LAME library loads (3x faster, same settings, LAME's own Info frame),
    else through PyAV."""
    library = lame()
    if library is None:
        return encode_av(pcm, sample_rate, "mp3")
    check_codec("mp3", pcm.shape[0], sample_rate)
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
