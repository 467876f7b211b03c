"""Tests for codes: each kind of AudioError becomes the SAMI status it was answered with before the split."""

from __future__ import annotations

import pytest

from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.errors import AudioError, AudioErrorKind
from namespaces.music_source_separate.audio.sniff import AudioHint
from namespaces.music_source_separate.codes import CODES, gateway_error, translated
from sami_gateway.errors import Code, GatewayError

BEFORE = {  # the Code each refusal carried when the audio layer raised gateway errors itself
    AudioErrorKind.EMPTY: Code.EMPTY_DATA,
    AudioErrorKind.INVALID: Code.ILLEGAL_DATA,
    AudioErrorKind.TOO_LONG: Code.EXCEEDED_DURATION,
    AudioErrorKind.BAD_HINT: Code.ILLEGAL_PAYLOAD,
}


@pytest.mark.parametrize("kind", list(AudioErrorKind))
def test_every_kind_has_its_code(kind: AudioErrorKind) -> None:
    answer = gateway_error(AudioError(kind, "some detail"))
    assert answer.code is BEFORE[kind] and CODES[kind] is BEFORE[kind]
    assert answer.status_text == f"{BEFORE[kind].value.text}:some detail"


@pytest.mark.parametrize(("data", "hint", "status_text"), [
    (b"", AudioHint(), "EmptyData:no audio bytes"),
    (b"definitely not audio", AudioHint(), "IllegalData:unrecognised audio format"),
    (b"\x00\x00" * 8000 * 30, AudioHint("pcm", 8000, 1), "ExceededDuration:audio lasts 30.0 s, the limit is 10 s"),
    (b"\x01\x02", AudioHint("pcm", 8000), "IllegalPayload:pcm needs audio_info.channel 1..2"),
])
def test_translated_answers_as_before(data: bytes, hint: AudioHint, status_text: str) -> None:
    with pytest.raises(GatewayError) as caught, translated():
        decode(data, hint, max_seconds=10)
    assert caught.value.status_text == status_text and caught.value.status.http == 400
    assert isinstance(caught.value.__cause__, AudioError)


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), translated():
        raise KeyError("not the library's")
    with translated():
        pass
