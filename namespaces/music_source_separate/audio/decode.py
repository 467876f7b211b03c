"""Bounded decoding of untrusted bytes to float32 samples, refusing bad, damaged or over-long audio."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf

from . import framing
from .errors import AudioError, AudioErrorKind
from .sniff import DEMUXERS, SOUNDFILE_FORMATS, AudioHint, declared_frames, probe_duration, sniff
from .source import AudioBytes, open_bytes

# Input sample rates accepted, inclusive: telephone audio up to studio 192 kHz. The models
# hear 44.1 kHz, so a higher rate only costs memory and resampling time.
INPUT_RATES = (8000, 192000)
MAX_CHANNELS = 2  # mono or stereo, as SAMI takes; more is a setting (`max_input_channels`)
# Decoded samples held at once (all channels): ten minutes of 48 kHz 8-channel audio, under
# 1 GB as float32, so a small compressed file cannot claim gigabytes of memory.
MAX_DECODED_SAMPLES = 600 * 48_000 * 8
MIN_SECONDS = 0.01  # shorter input (a handful of samples) is no music to separate: refused
CHUNK_FRAMES = 1 << 16  # frames libsndfile reads at a time


@dataclass(frozen=True)
class DecodedAudio:
    """float32 samples shaped (channels, frames), C-contiguous, with their rate and detected format."""

    samples: np.ndarray
    sample_rate: int
    format: str


def length_known(frames: int, fmt: str) -> bool:
    """Whether libsndfile knows how many frames to read: not for a FLAC of unknown length, nor
    a WAV whose `data` size a stream writer left at 0 (libsndfile reads no frames of it)."""
    return declared_frames(frames) is not None and not (fmt == "wav" and frames == 0)


def _frame_limit(max_seconds: float, rate: int, channels: int, held: bool = True) -> int:
    """Frames that may be decoded: the duration limit, and with `held` (all kept in memory at once)
    the memory budget for this channel count."""
    seconds_limit = int(max_seconds * rate)
    return min(seconds_limit, MAX_DECODED_SAMPLES // channels) if held else seconds_limit


def _over_limit(frames: float, rate: int, channels: int, max_seconds: float) -> AudioError:
    """The refusal for `frames` past _frame_limit: too long, or too many samples to hold."""
    if frames > max_seconds * rate:
        return AudioError(AudioErrorKind.TOO_LONG, f"audio is longer than {max_seconds:g} s")
    return AudioError(AudioErrorKind.INVALID, f"{channels} channels at {rate} Hz exceed {MAX_DECODED_SAMPLES} samples")


def _check_layout(rate: int, channels: int, max_channels: int) -> None:
    """The stream's rate and channel count, refused from the header before any sample is read."""
    if not 1 <= channels <= max_channels:
        raise AudioError(AudioErrorKind.INVALID, f"{channels} channels, 1..{max_channels} are accepted")
    if not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise AudioError(AudioErrorKind.INVALID,
                         f"sample rate {rate} Hz, {INPUT_RATES[0]}..{INPUT_RATES[1]} are accepted")


def _pcm_layout(hint: AudioHint, max_channels: int) -> tuple[int, int]:
    """(sample_rate, channels) from the hint, which raw PCM cannot do without."""
    rate, channels = hint.sample_rate, hint.channels
    if not isinstance(rate, int) or isinstance(rate, bool) or not INPUT_RATES[0] <= rate <= INPUT_RATES[1]:
        raise AudioError(AudioErrorKind.BAD_HINT,
                         f"pcm needs audio_info.sample_rate {INPUT_RATES[0]}..{INPUT_RATES[1]}")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= max_channels:
        raise AudioError(AudioErrorKind.BAD_HINT, f"pcm needs audio_info.channel 1..{max_channels}")
    return rate, channels


def _decode_pcm(data: AudioBytes, hint: AudioHint, max_seconds: float,
                max_channels: int) -> tuple[np.ndarray, int]:
    """Raw signed 16-bit little-endian interleaved samples."""
    rate, channels = _pcm_layout(hint, max_channels)
    if len(data) % (2 * channels):
        raise AudioError(AudioErrorKind.INVALID,
                         f"pcm byte count is not a multiple of {2 * channels} (s16le x {channels})")
    frames = len(data) // (2 * channels)
    if frames > _frame_limit(max_seconds, rate, channels):
        raise _over_limit(frames, rate, channels, max_seconds)
    ints = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return np.ascontiguousarray(ints.T, dtype=np.float32) / np.float32(32768), rate


class Decoder:
    """One pass over the bytes of a sniffed format: `rate` and `channels` from the header (checked),
    then `chunks()`, float32 (channels, n) arrays, refused once they pass `limit` frames."""

    rate: int
    channels: int
    limit: int

    def __init__(self, max_seconds: float, held: bool) -> None:
        self.max_seconds, self.held = max_seconds, held

    def _layout(self, rate: int, channels: int, max_channels: int) -> None:
        _check_layout(rate, channels, max_channels)
        self.rate, self.channels = rate, channels
        self.limit = _frame_limit(self.max_seconds, rate, channels, self.held)

    def _over(self, frames: float) -> AudioError:
        return _over_limit(frames, self.rate, self.channels, self.max_seconds)

    def chunks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _LibsndfileDecoder(Decoder):
    """wav/flac/ogg whose header says how many frames they hold, through libsndfile.

    The decoder must deliver every frame the header declares: libvorbis skips a page
    whose checksum fails and libsndfile stops at a damaged FLAC frame, both silently.
    """

    def __init__(self, file: sf.SoundFile, max_seconds: float, max_channels: int, held: bool) -> None:
        super().__init__(max_seconds, held)
        self._file, self.declared = file, file.frames
        self._layout(file.samplerate, file.channels, max_channels)

    def chunks(self) -> Iterator[np.ndarray]:
        if self.declared > self.limit:  # what the header claims: refused before any sample is read
            raise self._over(self.declared)
        read = 0
        while read <= self.limit:  # at most one frame past the limit
            block = self._file.read(frames=min(CHUNK_FRAMES, self.limit + 1 - read), dtype="float32", always_2d=True)
            if not block.shape[0]:
                break
            read += block.shape[0]
            if read > self.limit:
                raise self._over(read)
            yield np.ascontiguousarray(block.T)
        if read < self.declared:
            raise AudioError(AudioErrorKind.INVALID, f"damaged: {read} of the {self.declared} frames "
                                                     "its header declares could be decoded")

    def close(self) -> None:
        self._file.close()


class _FFmpegDecoder(Decoder):
    """mp3/aac/mp4 (and wav/flac/ogg of unknown length) through FFmpeg, packet by packet."""

    def __init__(self, data: AudioBytes, fmt: str, max_seconds: float, max_channels: int, held: bool) -> None:
        super().__init__(max_seconds, held)
        self._container = av.open(open_bytes(data), mode="r", format=DEMUXERS[fmt])
        self._contiguous = fmt in SOUNDFILE_FORMATS
        try:
            if not self._container.streams.audio:
                raise AudioError(AudioErrorKind.INVALID, "no audio stream")
            self._stream = self._container.streams.audio[0]
            context = self._stream.codec_context
            self._layout(context.sample_rate, context.channels, max_channels)
        except BaseException:
            self._container.close()
            raise

    def chunks(self) -> Iterator[np.ndarray]:
        total = 0
        for chunk in _planar_chunks(self._container, self._stream, self.rate, self._contiguous):
            if chunk.shape[0] != self.channels:
                raise AudioError(AudioErrorKind.INVALID, "channel count changes within the stream")
            total += chunk.shape[1]
            if total > self.limit:  # decoding stops as soon as the length passes the limit
                raise self._over(total)
            yield chunk

    def close(self) -> None:
        self._container.close()


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
            raise AudioError(AudioErrorKind.INVALID, "sample rate changes within the stream")
        if contiguous and frame.pts is not None and frame.time_base is not None:
            start = round(frame.pts * frame.time_base * rate)
            if expected is not None and abs(start - expected) > 1:
                raise AudioError(AudioErrorKind.INVALID,
                                 f"damaged: {start - expected} samples missing at {expected / rate:.2f} s")
            expected = start + frame.samples
        for converted in resampler.resample(frame):
            yield converted.to_ndarray()
    for converted in resampler.resample(None):
        yield converted.to_ndarray()


def _short_reason(exc: Exception) -> str:
    text = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    return (text or type(exc).__name__).strip()[:120]


@contextmanager
def _refusals(fmt: str) -> Iterator[None]:
    """Any decoder failure within as a short INVALID AudioError."""
    try:
        yield
    except (AudioError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: every decoder failure is the client's data
        raise AudioError(AudioErrorKind.INVALID, f"cannot decode {fmt}: {_short_reason(exc)}") from exc


@contextmanager
def open_decoder(data: AudioBytes, fmt: str, max_seconds: float, max_channels: int,
                 held: bool = True) -> Iterator[Decoder]:
    """A decoder of `data` (prepared, of a sniffed format, not pcm) as `decode` chooses it: libsndfile
    for wav/flac/ogg whose header gives their length, FFmpeg otherwise. Its limit is `max_seconds`,
    and with `held` (the samples kept at once) the memory budget too. Every failure, while it is
    opened or read within this block, is an AudioError."""
    with _refusals(fmt):
        decoder: Decoder | None = None
        if fmt in SOUNDFILE_FORMATS:
            file = sf.SoundFile(open_bytes(data))
            try:
                if length_known(file.frames, fmt):
                    decoder = _LibsndfileDecoder(file, max_seconds, max_channels, held)
            finally:
                if decoder is None:  # FFmpeg decodes it, or it is refused
                    file.close()
        decoder = decoder or _FFmpegDecoder(data, fmt, max_seconds, max_channels, held)
        try:
            yield decoder
        finally:
            decoder.close()


def _decode_samples(data: AudioBytes, fmt: str, hint: AudioHint, max_seconds: float,
                    max_channels: int) -> tuple[np.ndarray, int]:
    """Dispatch on the format; any decoder failure becomes a short INVALID AudioError."""
    if fmt == "pcm":
        with _refusals(fmt):
            return _decode_pcm(data, hint, max_seconds, max_channels)
    with open_decoder(data, fmt, max_seconds, max_channels) as decoder:
        chunks = list(decoder.chunks())
    if not chunks:
        return np.zeros((decoder.channels, 0), dtype=np.float32), decoder.rate
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), decoder.rate


def _format_of(data: bytes, hint: AudioHint, max_channels: int) -> str:
    """The sniffed format, or "pcm" for headerless bytes the hint describes; else refused."""
    if not data:
        raise AudioError(AudioErrorKind.EMPTY, "no audio bytes")
    fmt = sniff(data)
    if fmt is not None:
        return fmt
    # Headerless bytes are raw pcm when the hint says so, or names no format but gives its layout.
    named_pcm = (hint.format or "").lower() == "pcm"
    layout_only = hint.format is None and hint.sample_rate is not None and hint.channels is not None
    if not (named_pcm or layout_only):
        raise AudioError(AudioErrorKind.INVALID, "unrecognised audio format")
    _pcm_layout(hint, max_channels)
    return "pcm"


def prepare(data: AudioBytes, hint: AudioHint, max_seconds: float, max_channels: int) -> tuple[str, AudioBytes]:
    """The format of `data` and the bytes to decode (see framing.whole), refusing what is unrecognised,
    what its framing shows cut short or damaged, and what its header says lasts past `max_seconds`."""
    fmt = _format_of(data, hint, max_channels)
    try:
        data = framing.whole(data, fmt)
    except framing.Damaged as exc:
        raise AudioError(AudioErrorKind.INVALID, f"{fmt} is cut short or damaged: {exc}") from exc
    seconds = probe_duration(data, fmt, hint)
    if seconds is not None and seconds > max_seconds:
        raise AudioError(AudioErrorKind.TOO_LONG, f"audio lasts {seconds:.1f} s, the limit is {max_seconds:g} s")
    return fmt, data


def check_length(frames: int, rate: int, fmt: str) -> None:
    """Refuses decoded audio of no samples, or too short to be music."""
    if frames == 0:
        raise AudioError(AudioErrorKind.INVALID, f"{fmt} holds no audio samples")
    if frames < MIN_SECONDS * rate:
        raise AudioError(AudioErrorKind.INVALID, f"audio shorter than {MIN_SECONDS * 1000:g} ms")


def check_finite(samples: np.ndarray) -> None:
    """Refuses NaN or infinite samples."""
    if not np.isfinite(samples).all():
        raise AudioError(AudioErrorKind.INVALID, "audio contains NaN or infinite samples")


def decode(data: AudioBytes, hint: AudioHint, max_seconds: float, max_channels: int = MAX_CHANNELS) -> DecodedAudio:
    """Decode client bytes to float32 (channels, frames), refusing bad, damaged or over-long audio.

    The format comes from the bytes; the hint only matters for headerless PCM.
    A header claiming more than `max_seconds`, more than `max_channels` or a rate outside
    INPUT_RATES is refused before any sample is decoded, and decoding stops as soon as the
    samples pass `max_seconds` whatever the header said. A file whose framing shows it cut
    short or broken is refused rather than separated in part (see framing). Every refusal
    is an AudioError.
    """
    fmt, data = prepare(data, hint, max_seconds, max_channels)
    samples, rate = _decode_samples(data, fmt, hint, max_seconds, max_channels)
    check_length(samples.shape[-1] if samples.shape[0] else 0, rate, fmt)
    check_finite(samples)
    return DecodedAudio(np.ascontiguousarray(samples, dtype=np.float32), int(rate), fmt)
