"""The audio library's one exception, whose kind says why input audio was refused."""

from __future__ import annotations

from enum import Enum


class AudioErrorKind(Enum):
    """Why input audio was refused."""

    EMPTY = "empty"  # no bytes at all
    INVALID = "invalid"  # not audio this library takes: unrecognised, damaged, out-of-range layout, too short
    TOO_LONG = "too long"  # lasts longer than the caller's limit
    BAD_HINT = "bad hint"  # headerless PCM whose hint lacks a usable sample rate or channel count


class AudioError(ValueError):
    """Input audio refused: `kind` says why, the message says what, in words fit for the sender."""

    def __init__(self, kind: AudioErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[AudioError], tuple[AudioErrorKind, str]]:
        return type(self), (self.kind, str(self))
