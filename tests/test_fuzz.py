"""Property-based fuzzing of the parsers that see untrusted input first.

A fixed budget runs in CI; `HYPOTHESIS_PROFILE=long python3 -m pytest tests/test_fuzz.py`
runs a longer search (see the README).
"""

from __future__ import annotations

import os
import string
from functools import cache
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from namespaces.music_source_separate.audio.decode import decode
from namespaces.music_source_separate.audio.errors import AudioError
from namespaces.music_source_separate.audio.framing import Damaged, whole
from namespaces.music_source_separate.audio.sniff import AudioHint, sniff
from namespaces.music_source_separate.codes import gateway_error
from namespaces.music_source_separate.requests.params import parse_params
from sami_gateway.errors import GatewayError
from sami_gateway.protocol.envelope import decode_data, parse_routing
from sami_gateway.protocol.envelope import parse_invoke as parse_received
from sami_gateway.protocol.reader import read_envelope

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

def parse_invoke(task_id: str, query: dict[str, str], raw: bytes) -> Any:
    received = read_envelope(raw, 1 << 20)
    return parse_received(task_id, parse_routing(query, received.fields), received)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELDS = st.sampled_from(["appkey", "token", "namespace", "version", "data", "payload", "x"])


@given(st.binary(max_size=2000))
def test_any_body_is_answered_or_refused_cleanly(body: bytes) -> None:
    try:
        parse_invoke("t", {}, body)
    except GatewayError as exc:
        assert 400 <= exc.status.http < 500


@given(st.dictionaries(FIELDS, JSON_VALUES, max_size=7), st.dictionaries(FIELDS, st.text(max_size=8)))
def test_any_json_envelope(fields: dict[str, object], query: dict[str, str]) -> None:
    try:
        call = parse_invoke("t", query, orjson.dumps(fields))
    except GatewayError as exc:
        assert 400 <= exc.status.http < 500
    else:
        assert isinstance(call.payload, dict)


@given(st.text(alphabet=string.ascii_letters + string.digits + "+/=-_ \\n", max_size=64))
def test_base64_is_strict_and_round_trips(text: str) -> None:
    try:
        data = decode_data(text)
    except GatewayError as exc:
        assert exc.status.code == 40000010
    else:
        import base64

        assert base64.b64encode(data).decode() == text  # accepted means canonical


@given(st.dictionaries(st.sampled_from(["model", "url", "audio_info", "extra", "other"]), JSON_VALUES,
                       max_size=5) | st.fixed_dictionaries({
                           "extra": st.dictionaries(
                               st.sampled_from(["output_format", "output_sample_rate", "output_channel"]),
                               JSON_VALUES, max_size=3)}))
def test_any_payload(payload: dict[str, object]) -> None:
    try:
        params = parse_params(payload)
    except GatewayError as exc:
        assert exc.status.code == 40000022
    else:
        assert 8000 <= params.output.sample_rate <= 48000 and params.output.channels in (1, 2)


AUDIO_PREFIXES = st.sampled_from([b"", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"ID3\x03\x00\x00",
                                  b"\xff\xfb\x90\x00", b"\xff\xf1\x50\x80", b"\x00\x00\x00\x18ftypM4A "])


@given(AUDIO_PREFIXES, st.binary(max_size=4000),
       st.sampled_from([AudioHint(), AudioHint("pcm", 8000, 1), AudioHint(None, 44100, 2)]))
def test_sniff_and_decode_never_crash(prefix: bytes, rest: bytes, hint: AudioHint) -> None:
    data = prefix + rest
    assert sniff(data) in (None, "wav", "flac", "ogg", "mp3", "aac", "mp4")
    try:
        audio = decode(data, hint, max_seconds=5.0)
    except AudioError as exc:
        assert 400 <= gateway_error(exc).status.http < 500
    else:
        assert audio.samples.ndim == 2 and audio.samples.shape[1] > 0


@cache
def valid_file(fmt: str) -> bytes:
    from tests.conftest import encode_input

    return encode_input(fmt, 0.3)


MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6)


@given(st.sampled_from(["wav", "flac", "ogg", "mp3", "aac", "m4a"]), MUTATIONS,
       st.none() | st.integers(0, 1 << 16), st.binary(max_size=64))
def test_mutated_real_files_are_decoded_or_refused(fmt: str, edits: list[tuple[int, int]], cut: int | None,
                                                   tail: bytes) -> None:
    """Valid files with bytes overwritten, cut short and extended: decoded to sane audio, or a 4xx."""
    data = bytearray(valid_file(fmt))
    for position, value in edits:
        data[position % len(data)] = value
    mutated = bytes(data[:cut]) + tail
    try:
        audio = decode(mutated, AudioHint(), max_seconds=5.0)
    except AudioError as exc:
        assert 400 <= gateway_error(exc).status.http < 500
    else:
        assert audio.samples.shape[0] in (1, 2) and audio.samples.shape[1] > 0
        assert np.isfinite(audio.samples).all()


@given(st.sampled_from(["wav", "flac", "ogg", "mp3", "aac", "mp4", "pcm"]), st.binary(max_size=3000))
def test_framing_walks_take_any_bytes(fmt: str, data: bytes) -> None:
    try:
        stream = whole(data, fmt)
    except Damaged as exc:
        assert 0 < len(str(exc)) < 120
    else:
        assert len(stream) <= len(data)


def test_integers_beyond_64_bits_are_a_client_error() -> None:
    import pytest

    with pytest.raises(GatewayError) as info:
        parse_invoke("t", {}, b'{"appkey": 123456789012345678901234567890}')
    assert info.value.status.code == 40000000
    with pytest.raises(GatewayError) as info:
        parse_params(parse_invoke("t", {}, b'{"payload": "{\\"model\\": 1e999999}"}').payload)
    assert info.value.status.http == 400
