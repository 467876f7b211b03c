"""The invoke body read as it streams: same answers as a whole-body parse, in any chunking."""

from __future__ import annotations

import base64
import mmap
import os
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sami_gateway.errors import Code, GatewayError
from sami_gateway.protocol.reader import ENVELOPE_BYTES, EnvelopeReader, ReceivedEnvelope, read_envelope

LIMIT = 1 << 24


def fed(body: bytes, size: int, limit: int = LIMIT) -> ReceivedEnvelope:
    reader = EnvelopeReader(limit, len(body))
    for start in range(0, len(body), size):
        reader.feed(body[start:start + size])
    return reader.close()


def data_of(received: ReceivedEnvelope) -> bytes:
    assert received.data is not None
    return bytes(received.data.value())


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 65536])
def test_any_chunking_gives_the_same_fields_and_data(size: int) -> None:
    raw = os.urandom(5000)
    fields = {"appkey": "k", "token": "t.o.k", "payload": '{"model": "2track_acc", "x": "\\"data\\""}',
              "nested": {"data": [1, "}", {"data": "x"}]}, "data": base64.b64encode(raw).decode(), "z": None}
    received = fed(orjson.dumps(fields), size)
    assert received.fields == {**fields, "data": ""}
    assert data_of(received) == raw


def test_large_data_lands_in_a_memory_map_without_a_copy() -> None:
    raw = os.urandom(3 * 2**20 + 1)
    received = fed(b'{"data": "' + base64.b64encode(raw) + b'"}', 65536)
    value = received.data.value() if received.data else None
    assert isinstance(value, mmap.mmap) and len(value) == len(raw) and value[:] == raw


def test_size_is_known_before_and_beyond_the_limit() -> None:
    text = base64.b64encode(b"x" * 1000)
    received = fed(b'{"data":"' + text + b'"}', 100, limit=10)
    assert received.data is not None and received.data.size == 1000
    with pytest.raises(GatewayError) as refused:
        received.data.value()
    assert refused.value.code is Code.INVALID_DATA  # never reached: the size check comes first


@pytest.mark.parametrize("text", ["QUJD====", "QUJ", "QU JD", "QUI-", "QUI_", "QQ==QQ==", "=QUJ", "Q===", "QR==",
                                  "QUJDQR==", "QUJD\\nREVG", "QUJD\\u00e9EVG"])
def test_invalid_base64_is_remembered_not_raised(text: str) -> None:
    received = read_envelope(b'{"data": "' + text.encode() + b'", "appkey": "k"}', LIMIT)
    assert received.fields["appkey"] == "k"
    with pytest.raises(GatewayError) as refused:
        data_of(received)
    assert refused.value.code is Code.INVALID_DATA


@pytest.mark.parametrize("size", [1, 3, 64])
def test_json_escapes_in_data_are_honoured(size: int) -> None:
    """PHP's json_encode writes `\\/`; `\\u0041` is `A`: both decode as a JSON parser would."""
    raw = bytes(range(256)) * 4
    text = base64.b64encode(raw).decode().replace("/", "\\/").replace("A", "\\u0041")
    assert data_of(fed(f'{{"data": "{text}"}}'.encode(), size)) == raw


@pytest.mark.parametrize("body", [
    b'{"data": "QUJD\x01"}', b'{"data": "QU\\xJD"}', b'{"data": "QUJD\\u12G4"}', b'{"data": "QUJD', b"{",
    b'{"data": "\xff\xfe"}', b'{"data": "QUJD", "data": "QUJD"}', b'{"data": "QUJD", "d\\u0061ta": "REVG"}',
    b"[1, 2]", b'{"data": "QUJD"} trailing',
])
def test_bodies_that_are_not_one_json_object_are_client_errors(body: bytes) -> None:
    with pytest.raises(GatewayError) as refused:
        read_envelope(body, LIMIT)
    assert refused.value.code is Code.CLIENT_ERROR


def test_data_under_an_escaped_key_is_left_to_the_parse() -> None:
    received = read_envelope(b'{"d\\u0061ta": "QUJD"}', LIMIT)
    assert received.data is None and received.fields["data"] == "QUJD"


def test_non_string_data_is_kept_for_the_envelope_check() -> None:
    assert read_envelope(b'{"data": 5, "x": 1}', LIMIT).fields == {"data": 5, "x": 1}
    assert read_envelope(b'{"data" : null}', LIMIT).data is None


def test_the_envelope_around_data_is_bounded() -> None:
    reader = EnvelopeReader(LIMIT)
    reader.feed(b'{"payload": "')
    with pytest.raises(GatewayError) as refused:
        reader.feed(b"x" * ENVELOPE_BYTES)
    assert refused.value.code is Code.EXCEEDED_DATA_SIZE
    assert refused.value.headers["Connection"] == "close"


def test_empty_body_is_an_empty_object() -> None:
    assert read_envelope(b"  ", LIMIT).fields == {}


def test_each_chunk_costs_little_whatever_the_body_size() -> None:
    """The event loop runs between chunks: a 64 KiB chunk must never cost more than a few ms."""
    raw = os.urandom(24 * 2**20)
    body = b'{"appkey": "k", "data": "' + base64.b64encode(raw) + b'", "payload": "{}"}'
    reader = EnvelopeReader(len(raw), len(body))
    costs = []
    for start in range(0, len(body), 65536):
        began = time.perf_counter()
        reader.feed(body[start:start + 65536])
        costs.append(time.perf_counter() - began)
    received = reader.close()
    assert data_of(received) == raw
    costs.sort()
    assert costs[len(costs) // 2] < 0.002 and costs[-1] < 0.05, (costs[len(costs) // 2], costs[-1])


@given(st.dictionaries(st.sampled_from(["appkey", "data", "payload", "x"]),
                       st.text(max_size=30) | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())),
       st.integers(1, 40))
@settings(suppress_health_check=[HealthCheck.too_slow])  # generation slows when the machine is busy, not the parse
def test_streamed_parse_agrees_with_a_whole_parse(fields: dict[str, str], size: int) -> None:
    body = orjson.dumps(fields)
    received = fed(body, size)
    assert received.fields == {**fields, **({"data": ""} if "data" in fields else {})}
    text = fields.get("data", "")
    if received.data is None:
        assert text == ""
        return
    try:
        expected = base64.b64decode(text, validate=True)
        canonical = base64.b64encode(expected).decode() == text
    except ValueError:
        canonical = False
    if canonical:
        assert data_of(received) == expected
    else:
        with pytest.raises(GatewayError):
            data_of(received)
