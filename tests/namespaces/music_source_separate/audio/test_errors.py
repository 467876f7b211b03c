"""Tests for audio.errors: an AudioError is a ValueError that keeps its kind and message, pickled too."""

from __future__ import annotations

import pickle

from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind


def test_kind_and_message_survive_pickling() -> None:
    exc = AudioError(AudioErrorKind.TOO_LONG, "audio is longer than 5 s")
    assert isinstance(exc, ValueError) and str(exc) == "audio is longer than 5 s"
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is AudioError and copy.kind is AudioErrorKind.TOO_LONG and str(copy) == str(exc)
