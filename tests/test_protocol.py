"""The envelope: strict base64, payload strings, routing fields, replies."""

from __future__ import annotations

import base64

import orjson
import pytest

from sami_gateway.errors import Code, GatewayError
from sami_gateway.protocol.envelope import (
    InvokeRequest,
    decode_data,
    envelope,
    error_envelope,
    parse_routing,
    reject_repeated,
)
from sami_gateway.protocol.envelope import parse_invoke as parse_received
from sami_gateway.protocol.reader import decode_text, read_envelope

QUERY = {"appkey": "k", "token": "t", "namespace": "Ns"}


def parse_invoke(task_id: str, query: dict[str, str], raw: bytes) -> InvokeRequest:
    received = read_envelope(raw, 1 << 20)
    return parse_received(task_id, parse_routing(query, received.fields), received)


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


@pytest.mark.parametrize("raw", [b"", b"a", b"ab\x00", bytes(range(256)) * 3])
def test_base64_round_trip_and_size(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    assert decode_data(text) == raw
    assert decode_text(text, len(raw)).size == len(raw)


@pytest.mark.parametrize("text", ["QUJD====", "QUJ", "QU JD", "QUI-", "QUI_", "QQ==QQ==", "=QUJ",
                                  "QUJD\n", "Q===", "QUJDé==="])
def test_non_standard_base64_is_invalid_data(text: str) -> None:
    with pytest.raises(GatewayError) as info:
        decode_data(text)
    assert info.value.code is Code.INVALID_DATA


def test_fields_come_from_query_or_body() -> None:
    from_query = parse_invoke("id", QUERY, body(payload='{"model":"x"}', data="QUJD"))
    from_body = parse_invoke("id", {}, body(**QUERY, payload='{"model":"x"}', data="QUJD"))
    assert (from_query.appkey, from_query.token, from_query.namespace) == ("k", "t", "Ns")
    assert (from_body.appkey, from_body.token, from_body.namespace) == ("k", "t", "Ns")
    assert from_query.payload == from_body.payload == {"model": "x"}
    assert from_query.data is not None and from_query.data.value() == b"ABC"


def test_same_value_in_both_places_is_accepted() -> None:
    assert parse_invoke("id", QUERY, body(**QUERY)).appkey == "k"


@pytest.mark.parametrize("field", ["appkey", "token", "namespace", "version"])
def test_conflict_between_query_and_body_is_refused(field: str) -> None:
    query = {**QUERY, "version": "v4"}
    with pytest.raises(GatewayError) as info:
        parse_invoke("id", query, body(**{field: "other"}))
    assert info.value.code is Code.CLIENT_ERROR
    assert field in info.value.detail


@pytest.mark.parametrize(("raw", "code"), [
    (b"{", Code.CLIENT_ERROR),
    (b"[1, 2]", Code.CLIENT_ERROR),
    (body(payload={"model": "x"}), Code.INVALID_PAYLOAD),
    (body(payload="{not json"), Code.INVALID_PAYLOAD),
    (body(payload='["a list"]'), Code.INVALID_PAYLOAD),
    (body(data=123), Code.INVALID_DATA),
    (body(appkey=5), Code.CLIENT_ERROR),
    (body(version="v3"), Code.CLIENT_ERROR),
])
def test_malformed_requests(raw: bytes, code: Code) -> None:
    with pytest.raises(GatewayError) as info:
        parse_invoke("id", {}, raw)
    assert info.value.code is code


def test_success_envelope_has_padded_data_and_payload_string() -> None:
    reply = orjson.loads(envelope("tid", "Ns", data=b"ab", payload={"k": 1}))
    assert reply == {"task_id": "tid", "namespace": "Ns", "status_code": 20000000,
                     "status_text": "OK", "data": "YWI=", "payload": '{"k":1}'}


def test_error_envelope_carries_code_and_detail() -> None:
    exc = GatewayError("IllegalToken", code=Code.DENIED_ACCESS)
    reply = orjson.loads(error_envelope("tid", "Ns", exc))
    assert reply == {"task_id": "tid", "namespace": "Ns", "status_code": 40200002,
                     "status_text": "DeniedAccess:IllegalToken"}


@pytest.mark.parametrize("text", ["QR==", "QUJ=", "QUJDQR=="])
def test_non_zero_padding_bits_are_invalid(text: str) -> None:
    """Accepting them would silently change the client's bytes on re-encoding."""
    with pytest.raises(GatewayError) as info:
        decode_data(text)
    assert info.value.code is Code.INVALID_DATA


def test_repeated_routing_field_in_query_is_refused() -> None:
    reject_repeated([("appkey", "a"), ("token", "t"), ("other", "1"), ("other", "2")])
    with pytest.raises(GatewayError) as info:
        reject_repeated([("appkey", "a"), ("appkey", "b")])
    assert info.value.code is Code.CLIENT_ERROR and "appkey" in info.value.detail
