"""Shared by the audio library's tests: test signals, files written by other encoders, an independent decoder."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.encode import encode, encode_av
from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
from namespaces.music_source_separate.audio.sniff import AudioHint

NO_HINT = AudioHint()
CODEC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MP3_SLACK = 1152  # one MPEG-1 layer III frame: the most an mp3 decoder may add past n
AAC_PRIMING = 1024  # ADTS cannot signal the encoder's priming: decoders return it
AAC_FRAME = 1024
STATUS_PREFIX = len("ExceededDuration:")  # the longest name the namespace puts before the message


def sine(rate: int, channels: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    """(channels, n) float32: left 0.5*sin, right 0.4*cos (orthogonal, so a channel swap shows)."""
    t = np.arange(int(rate * seconds)) / rate
    rows = [0.5 * np.sin(2 * np.pi * freq * t), 0.4 * np.cos(2 * np.pi * freq * t)]
    return np.stack(rows[:channels]).astype(np.float32)


def soundfile_bytes(x: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x.T, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def m4a_bytes(x: np.ndarray, rate: int) -> bytes:
    """AAC in an MP4 ("ipod") container, written directly with PyAV."""
    layout = "mono" if x.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def pyav_decode(data: bytes) -> tuple[np.ndarray, int]:
    """Independent decode with PyAV (no code of the audio library): (channels, n) float32 and the rate."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def kind_of(data: bytes, hint: AudioHint = NO_HINT, max_seconds: float = 60.0, **kwargs: int) -> AudioErrorKind:
    """The kind of the AudioError decode() refuses `data` with; its message must be short and clean."""
    with pytest.raises(AudioError) as caught:
        decode(data, hint, max_seconds, **kwargs)
    text = str(caught.value)
    assert len(text) < 200 - STATUS_PREFIX and "Traceback" not in text and "object at 0x" not in text
    return caught.value.kind


def id3_end(data: bytes) -> int:
    size = 0
    for byte in data[6:10]:
        size = (size << 7) | byte
    return 10 + size


def strip_id3(data: bytes) -> bytes:
    assert data[:3] == b"ID3"
    return data[id3_end(data):]


def encoded_input(fmt: str, x: np.ndarray, rate: int) -> tuple[bytes, AudioHint]:
    if fmt == "pcm":
        ints = np.round(x.T * 32767).astype("<i2")
        return ints.tobytes(), AudioHint("pcm", rate, x.shape[0])
    if fmt == "flac":
        return soundfile_bytes(x, rate, "FLAC"), NO_HINT
    if fmt == "ogg":
        return soundfile_bytes(x, rate, "OGG", "VORBIS"), NO_HINT
    if fmt == "mp4":
        return m4a_bytes(x, rate), NO_HINT
    return encode(x, rate, fmt), NO_HINT


@pytest.fixture(scope="module")
def samples_by_format() -> dict[str, bytes]:
    x = sine(44100, 2, 0.5)
    return {
        "wav": encode(x, 44100, "wav"),
        "flac": soundfile_bytes(x, 44100, "FLAC"),
        "ogg": soundfile_bytes(x, 44100, "OGG", "VORBIS"),
        "mp3": encode_av(x, 44100, "mp3"),  # FFmpeg's muxer: an ID3v2 tag, then its own Xing frame
        "aac": encode(x, 44100, "aac"),
        "mp4": m4a_bytes(x, 44100),
    }
