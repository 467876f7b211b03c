"""Audio bytes in and out: format sniffing, bounded decoding, channel and rate conversion, encoding."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np
import soundfile as sf
import soxr

from sami_gateway.errors import Code, GatewayError, error

from . import framing

FORMATS_IN = ("wav", "flac", "ogg", "mp3", "aac", "mp4", "pcm")  # detected names
FORMATS_OUT = ("wav", "mp3", "aac", "flac")

# Input sample rates accepted, inclusive: telephone audio up to studio 192 kHz. The models
# hear 44.1 kHz, so a higher rate only costs memory and resampling time.
INPUT_RATES = (8000, 192000)
MAX_CHANNELS = 2  # mono or stereo, as SAMI takes; more is a setting (`max_input_channels`)
# Decoded samples held at once (all channels): ten minutes of 48 kHz 8-channel audio, under
# 1 GB as float32, so a small compressed file cannot claim gigabytes of memory.
MAX_DECODED_SAMPLES = 600 * 48_000 * 8
MIN_SECONDS = 0.01  # shorter input (a handful of samples) is no music to separate: refused
_SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg"})
_UNKNOWN_FRAMES = 1 << 62  # libsndfile's SF_COUNT_MAX and anything near it: "length not in the header"
# Forced, so ffmpeg never probes further; wav/flac/ogg go to FFmpeg only when their header
# leaves the length unknown (see _length_known).
_DEMUXERS = {"mp3": "mp3", "aac": "aac", "mp4": "mov", "wav": "wav", "flac": "flac", "ogg": "ogg"}
_ENCODERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac")}  # muxer, codec
_BIT_RATES = {1: 128_000, 2: 192_000}  # by channel count


@dataclass(frozen=True)
class AudioHint:
    """What the client's payload.audio_info says; only raw PCM depends on it."""

    format: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class DecodedAudio:
    """float32 samples shaped (channels, frames), C-contiguous, with their rate and detected format."""

    samples: np.ndarray
    sample_rate: int
    format: str


# --- sniffing ---------------------------------------------------------------------------------

def _frame_sync(data: bytes, pos: int, frame_length: Callable[[bytes, int], int | None]) -> bool:
    """A frame header at `pos`, confirmed by the next header when the bytes reach that far."""
    length = frame_length(data, pos)
    if length is None:
        return False
    following = pos + length
    return following + 4 > len(data) or frame_length(data, following) is not None


def _sniff_at(data: bytes, pos: int) -> str | None:
    head = data[pos:pos + 12]
    if len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if _frame_sync(data, pos, framing.adts_frame_length):
        return "aac"
    if _frame_sync(data, pos, framing.mp3_frame_length):
        return "mp3"
    return None


def sniff(data: bytes) -> str | None:
    """The format named by the magic bytes, or None.

    Leading ID3v2 tags are skipped and what follows decides (ADTS, FLAC...); a tag
    followed by anything unrecognised counts as "mp3". MPEG sync words are confirmed
    by the next frame header when the data is long enough to hold one.
    """
    start = framing.skip_id3(data)
    if start == 0:
        return _sniff_at(data, 0)
    return _sniff_at(data, start) or "mp3"


# --- duration ---------------------------------------------------------------------------------

def _adts_seconds(data: bytes) -> float | None:
    """Seconds counted from the ADTS frame headers.

    Exact, or a lower bound when the chain breaks or the walk stops at its frame bound,
    so it never overstates the length.
    """
    _, _, blocks, rate = framing.adts_walk(data)
    return blocks * 1024 / rate if rate else None


def _av_seconds(data: bytes, fmt: str) -> float | None:
    with av.open(io.BytesIO(data), mode="r", format=_DEMUXERS[fmt]) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base if container.duration is not None else None


def probe_duration(data: bytes, fmt: str, hint: AudioHint) -> float | None:
    """Seconds the audio claims to last, read from headers without decoding; None if unknown.

    Exact for wav/flac/ogg (frame count), pcm (byte count) and ADTS (frame headers);
    the container's figure for mp3 (Xing/LAME header, else a bit-rate estimate) and mp4.
    """
    try:
        if fmt in _SOUNDFILE_FORMATS:
            info = sf.info(io.BytesIO(data))
            frames = _declared_frames(info.frames)
            return None if frames is None else frames / info.samplerate
        if fmt == "pcm":
            if not hint.sample_rate or not hint.channels:
                return None
            return len(data) / (2 * hint.channels * hint.sample_rate)
        if fmt == "aac" and (seconds := _adts_seconds(data)) is not None:
            return seconds
        return _av_seconds(data, fmt) if fmt in _DEMUXERS else None
    except Exception:  # noqa: BLE001 - an unreadable header just means "unknown"; decode() reports it
        return None


# --- decoding ---------------------------------------------------------------------------------

def _declared_frames(frames: int) -> int | None:
    """libsndfile's frame count, or None where the header leaves it unknown (a FLAC written
    as a stream has 0 total samples in STREAMINFO, which libsndfile reports as SF_COUNT_MAX)."""
    return frames if frames < _UNKNOWN_FRAMES else None


def _length_known(frames: int, fmt: str) -> bool:
    """Whether libsndfile knows how many frames to read: not for a FLAC of unknown length, nor
    a WAV whose `data` size a stream writer left at 0 (libsndfile reads no frames of it)."""
    return _declared_frames(frames) is not None and not (fmt == "wav" and frames == 0)


def _frame_limit(max_seconds: float, rate: int, channels: int) -> int:
    """Frames that may be decoded: the duration limit, and the memory budget for this channel count."""
    return int(min(max_seconds * rate, MAX_DECODED_SAMPLES // channels))


def _over_limit(frames: float, rate: int, channels: int, max_seconds: float) -> GatewayError:
    """The refusal for `frames` past _frame_limit: too long, or too many samples to hold."""
    if frames > max_seconds * rate:
        return _too_long(max_seconds)
    return error(Code.ILLEGAL_DATA, f"{channels} channels at {rate} Hz exceed {MAX_DECODED_SAMPLES} samples")


def _too_long(max_seconds: float) -> GatewayError:
    return error(Code.EXCEEDED_DURATION, f"audio is longer than {max_seconds:g} s")


def _check_layout(rate: int, channels: int, max_channels: int) -> None:
    """The stream's rate and channel count, refused from the header before any sample is read."""
    if not 1 <= channels <= max_channels:
        raise error(Code.ILLEGAL_DATA, f"{channels} channels, 1..{max_channels} are accepted")
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise error(Code.ILLEGAL_DATA, f"sample rate {rate} Hz, {INPUT_RATES[0]}..{INPUT_RATES[1]} are accepted")


def _pcm_layout(hint: AudioHint, max_channels: int) -> tuple[int, int]:
    """(sample_rate, channels) from the hint, which raw PCM cannot do without."""
    rate, channels = hint.sample_rate, hint.channels
    if not isinstance(rate, int) or isinstance(rate, bool) or not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise error(Code.ILLEGAL_PAYLOAD,
                    f"pcm needs audio_info.sample_rate {INPUT_RATES[0]}..{INPUT_RATES[1]}")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= max_channels:
        raise error(Code.ILLEGAL_PAYLOAD, f"pcm needs audio_info.channel 1..{max_channels}")
    return rate, channels


def _decode_pcm(data: bytes, hint: AudioHint, max_seconds: float,
                max_channels: int) -> tuple[np.ndarray, int]:
    """Raw signed 16-bit little-endian interleaved samples."""
    rate, channels = _pcm_layout(hint, max_channels)
    if len(data) % (2 * channels):
        raise error(Code.ILLEGAL_DATA,
                    f"pcm byte count is not a multiple of {2 * channels} (s16le x {channels})")
    frames = len(data) // (2 * channels)
    if frames > _frame_limit(max_seconds, rate, channels):
        raise _over_limit(frames, rate, channels, max_seconds)
    ints = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return np.ascontiguousarray(ints.T, dtype=np.float32) / np.float32(32768), rate


def _decode_soundfile(data: bytes, fmt: str, max_seconds: float,
                      max_channels: int) -> tuple[np.ndarray, int] | None:
    """wav/flac/ogg through libsndfile, reading at most one frame past the limit; None where
    the header leaves the length unknown, for FFmpeg to decode instead.

    The decoder must deliver every frame the header declares: libvorbis skips a page
    whose checksum fails and libsndfile stops at a damaged FLAC frame, both silently.
    """
    with sf.SoundFile(io.BytesIO(data)) as file:
        rate, channels, declared = file.samplerate, file.channels, file.frames
        if not _length_known(declared, fmt):
            return None
        _check_layout(rate, channels, max_channels)
        limit = _frame_limit(max_seconds, rate, channels)
        if declared > limit:  # what the header claims: refused before any sample is read
            raise _over_limit(declared, rate, channels, max_seconds)
        frames = file.read(frames=limit + 1, dtype="float32", always_2d=True)
    if frames.shape[0] > limit:
        raise _over_limit(frames.shape[0], rate, channels, max_seconds)
    if frames.shape[0] < declared:
        raise error(Code.ILLEGAL_DATA, f"damaged: {frames.shape[0]} of the {declared} frames "
                                       "its header declares could be decoded")
    return np.ascontiguousarray(frames.T), rate


def _planar_chunks(container: av.container.InputContainer, stream: av.AudioStream,
                   rate: int, contiguous: bool = False) -> Iterator[np.ndarray]:
    """Each decoded frame as float32 (channels, n); format conversion only, the rate is never changed.

    With `contiguous`, each frame must start where the previous one ended: FFmpeg drops
    a FLAC frame whose CRC fails and goes on, which only its timestamps show.
    """
    resampler = av.AudioResampler(format="fltp")
    expected: int | None = None
    for frame in container.decode(stream):
        if frame.sample_rate != rate:
            raise error(Code.ILLEGAL_DATA, "sample rate changes within the stream")
        if contiguous and frame.pts is not None and frame.time_base is not None:
            start = round(frame.pts * frame.time_base * rate)
            if expected is not None and abs(start - expected) > 1:
                raise error(Code.ILLEGAL_DATA, f"damaged: {start - expected} samples missing "
                                               f"at {expected / rate:.2f} s")
            expected = start + frame.samples
        for converted in resampler.resample(frame):
            yield converted.to_ndarray()
    for converted in resampler.resample(None):
        yield converted.to_ndarray()


def _decode_av(data: bytes, fmt: str, max_seconds: float, max_channels: int) -> tuple[np.ndarray, int]:
    """mp3/aac/mp4 (and wav/flac/ogg of unknown length) through FFmpeg, stopping as soon as
    the decoded length passes the limit."""
    with av.open(io.BytesIO(data), mode="r", format=_DEMUXERS[fmt]) as container:
        if not container.streams.audio:
            raise error(Code.ILLEGAL_DATA, "no audio stream")
        stream = container.streams.audio[0]
        channels, rate = stream.codec_context.channels, stream.codec_context.sample_rate
        _check_layout(rate, channels, max_channels)
        limit = _frame_limit(max_seconds, rate, channels)
        chunks: list[np.ndarray] = []
        total = 0
        for chunk in _planar_chunks(container, stream, rate, contiguous=fmt in _SOUNDFILE_FORMATS):
            if chunk.shape[0] != channels:
                raise error(Code.ILLEGAL_DATA, "channel count changes within the stream")
            chunks.append(chunk)
            total += chunk.shape[1]
            if total > limit:
                raise _over_limit(total, rate, channels, max_seconds)
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32), rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def _short_reason(exc: Exception) -> str:
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    return (text or type(exc).__name__).strip()[:120]


def _decode_samples(data: bytes, fmt: str, hint: AudioHint, max_seconds: float,
                    max_channels: int) -> tuple[np.ndarray, int]:
    """Dispatch on the format; any decoder failure becomes a short IllegalData."""
    try:
        if fmt == "pcm":
            return _decode_pcm(data, hint, max_seconds, max_channels)
        if fmt in _SOUNDFILE_FORMATS and (decoded := _decode_soundfile(data, fmt, max_seconds, max_channels)):
            return decoded
        return _decode_av(data, fmt, max_seconds, max_channels)
    except (GatewayError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: every decoder failure is the client's data
        raise error(Code.ILLEGAL_DATA, f"cannot decode {fmt}: {_short_reason(exc)}") from exc


def decode(data: bytes, hint: AudioHint, max_seconds: float, max_channels: int = MAX_CHANNELS) -> DecodedAudio:
    """Decode client bytes to float32 (channels, frames), refusing bad, damaged or over-long audio.

    The format comes from the bytes; the hint only matters for headerless PCM.
    A header claiming more than `max_seconds`, more than `max_channels` or a rate outside
    INPUT_RATES is refused before any sample is decoded, and decoding stops as soon as the
    samples pass `max_seconds` whatever the header said. A file whose framing shows it cut
    short or broken is refused rather than separated in part (see framing).
    """
    if not data:
        raise error(Code.EMPTY_DATA, "no audio bytes")
    fmt = sniff(data)
    if fmt is None:
        # Headerless bytes are raw pcm when the hint says so, or names no format but gives its layout.
        named_pcm = (hint.format or "").lower() == "pcm"
        layout_only = hint.format is None and hint.sample_rate is not None and hint.channels is not None
        if not (named_pcm or layout_only):
            raise error(Code.ILLEGAL_DATA, "unrecognised audio format")
        fmt = "pcm"
        _pcm_layout(hint, max_channels)
    try:
        data = framing.whole(data, fmt)
    except framing.Damaged as exc:
        raise error(Code.ILLEGAL_DATA, f"{fmt} is cut short or damaged: {exc}") from exc
    seconds = probe_duration(data, fmt, hint)
    if seconds is not None and seconds > max_seconds:
        raise error(Code.EXCEEDED_DURATION, f"audio lasts {seconds:.1f} s, the limit is {max_seconds:g} s")
    samples, rate = _decode_samples(data, fmt, hint, max_seconds, max_channels)
    if samples.shape[-1] == 0 or samples.shape[0] == 0:
        raise error(Code.ILLEGAL_DATA, f"{fmt} holds no audio samples")
    if samples.shape[-1] < MIN_SECONDS * rate:
        raise error(Code.ILLEGAL_DATA, f"audio shorter than {MIN_SECONDS * 1000:g} ms")
    if not np.isfinite(samples).all():
        raise error(Code.ILLEGAL_DATA, "audio contains NaN or infinite samples")
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), int(rate), fmt)


# --- conversion -------------------------------------------------------------------------------

def to_stereo(samples: np.ndarray) -> np.ndarray:
    """(C, n) -> (2, n) float32.

    Mono is duplicated and stereo returned as is. For C > 2 the channels past the first
    two are summed with gain g = 1/sqrt(2) into both sides, L = ch0 + g*sum(ch2..),
    R = ch1 + g*sum(ch2..), and the result is scaled by 1 / (1 + g*(C-2)) so that inputs
    within [-1, 1] stay within [-1, 1].
    """
    samples = np.asarray(samples, dtype=np.float32)
    channels = samples.shape[0]
    if channels == 0:
        raise ValueError("no channels")
    if channels == 1:
        return np.repeat(samples, 2, axis=0)
    if channels == 2:
        return samples
    gain = np.float32(1 / np.sqrt(2))
    rest = gain * samples[2:].sum(axis=0, dtype=np.float32)
    scale = np.float32(1 / (1 + gain * (channels - 2)))
    return np.stack([samples[0] + rest, samples[1] + rest]) * scale


def output_frames(input_frames: int, rate_in: int, rate_out: int) -> int:
    """round(input_frames * rate_out / rate_in), computed exactly: the length the output must have."""
    return round(Fraction(input_frames * rate_out, rate_in))


def fit_length(samples: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad the last axis to exactly `frames`."""
    have = samples.shape[-1]
    if have == frames:
        return samples
    if have > frames:
        return np.ascontiguousarray(samples[..., :frames])
    padding = [(0, 0)] * (samples.ndim - 1) + [(0, frames - have)]
    return np.pad(samples, padding)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(C, n) at rate_in -> (C, output_frames(n, ...)) at rate_out, soxr "HQ"; same array at equal rates."""
    if rate_in == rate_out:
        return samples
    frames = np.asarray(samples, dtype=np.float32).T  # soxr wants (frames, channels)
    converted = soxr.resample(np.ascontiguousarray(frames), rate_in, rate_out, quality="HQ")
    converted = np.ascontiguousarray(converted.reshape(converted.shape[0], -1).T)
    return fit_length(converted, output_frames(samples.shape[-1], rate_in, rate_out))


def to_channels(stereo: np.ndarray, channels: int) -> np.ndarray:
    """(2, n) -> (1, n), the mean of both sides, or (2, n) unchanged."""
    if channels == 2:
        return stereo
    if channels == 1:
        return np.asarray(stereo.mean(axis=0, keepdims=True, dtype=np.float32))
    raise ValueError(f"channels must be 1 or 2, not {channels}")


# --- encoding ---------------------------------------------------------------------------------

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
    the rates their encoders list (8000..48000 family); wav takes any.
    """
    if fmt not in FORMATS_OUT:
        raise ValueError(f"output format must be one of {FORMATS_OUT}, not {fmt!r}")
    pcm = np.asarray(samples, dtype=np.float32)
    if pcm.ndim != 2 or pcm.shape[0] == 0:
        raise ValueError("samples must be shaped (channels, frames)")
    pcm = np.clip(np.nan_to_num(pcm, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    if fmt in ("wav", "flac"):
        return _encode_soundfile(pcm, sample_rate, fmt)
    return _encode_av(pcm, sample_rate, fmt)
