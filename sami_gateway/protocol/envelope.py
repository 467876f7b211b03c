"""The SAMI invoke envelope: parsing a request, building a reply (no aiohttp here)."""

from __future__ import annotations

import binascii
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import Code, GatewayError, error
from .reader import DataDecoder, ReceivedEnvelope, decode_text, parse_object

SUPPORTED_VERSIONS = frozenset({"v4"})
ROUTING_FIELDS = ("appkey", "token", "namespace", "version")


@dataclass(frozen=True)
class InvokeRequest:
    """A parsed invoke request: routing fields, the payload object and `data` as it was decoded."""

    task_id: str
    appkey: str
    token: str
    namespace: str
    version: str | None
    data: DataDecoder | None  # None: no data (the input is payload.url's)
    payload: dict[str, Any]


def new_task_id() -> str:
    return str(uuid.uuid4())


def decode_data(text: str) -> bytes:
    """Decode strict standard padded base64 (RFC 4648 section 4), as `data` is decoded."""
    return bytes(decode_text(text, len(text)).value())


def parse_payload(value: Any) -> dict[str, Any]:
    """`payload` is a JSON object serialised into a string; absent or empty means {}."""
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise error(Code.INVALID_PAYLOAD, "payload must be a JSON string")
    return parse_object(value, Code.INVALID_PAYLOAD, "payload")


def routing_field(name: str, query: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """A routing field from the query or the body; both present and different is refused."""
    in_query = query.get(name)
    in_body = body.get(name)
    if in_body is not None and not isinstance(in_body, str):
        raise error(Code.CLIENT_ERROR, f"{name} must be a string")
    if in_query is not None and in_body is not None and in_query != in_body:
        raise error(Code.CLIENT_ERROR, f"{name} differs between query and body")
    return in_query if in_query is not None else (in_body or "")


def reject_repeated(pairs: Iterable[tuple[str, str]]) -> None:
    """A routing field given twice in the query is ambiguous: refused, never guessed."""
    names = [name for name, _ in pairs if name in ROUTING_FIELDS]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise error(Code.CLIENT_ERROR, f"{repeated[0]} is repeated in the query")


def _data(received: ReceivedEnvelope) -> DataDecoder | None:
    """The streamed data, or a `data` string the stream did not see (under an escaped key)."""
    if received.data is not None:
        return received.data if received.data.text_length else None
    value = received.fields.get("data")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise error(Code.INVALID_DATA, "data must be a base64 string")
    return decode_text(value, len(value))


def parse_routing(query: Mapping[str, str], body: Mapping[str, Any]) -> dict[str, str]:
    """The routing fields (`appkey`, `token`, `namespace`, `version`), from the query or the body:
    what the caller is authorized by, before anything else of the envelope is looked at."""
    return {name: routing_field(name, query, body) for name in ROUTING_FIELDS}


def parse_invoke(task_id: str, routing: Mapping[str, str], received: ReceivedEnvelope) -> InvokeRequest:
    """The rest of an authorized invoke's envelope: version, payload and data, without the namespace."""
    version = routing["version"] or None
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise error(Code.CLIENT_ERROR, f"unsupported version {version!r}")
    return InvokeRequest(
        task_id=task_id,
        appkey=routing["appkey"],
        token=routing["token"],
        namespace=routing["namespace"],
        version=version,
        data=_data(received),
        payload=parse_payload(received.fields.get("payload")),
    )


def envelope_parts(task_id: str, namespace: str, payload: Mapping[str, Any] | None,
                   with_data: bool) -> tuple[bytes, bytes]:
    """A success reply around its `data`: the bytes before the base64 text and those after it."""
    reply = orjson.dumps({
        "task_id": task_id,
        "namespace": namespace,
        "status_code": Code.OK.value.code,
        "status_text": Code.OK.value.text,
        "payload": orjson.dumps(payload or {}).decode(),
    })
    return (reply[:-1] + b',"data":"', b'"}') if with_data else (reply, b"")


def base64_pieces(data: bytes, piece_bytes: int = 3 * 64 * 1024) -> Iterator[bytes]:
    """`data` as standard padded base64, a piece at a time (pieces of 3n bytes join up exactly)."""
    for start in range(0, len(data), piece_bytes):
        yield binascii.b2a_base64(data[start:start + piece_bytes], newline=False)


def envelope(task_id: str, namespace: str, *, data: bytes | None = None,
             payload: Mapping[str, Any] | None = None) -> bytes:
    """A success reply: `data` as standard padded base64, `payload` as a JSON string."""
    head, tail = envelope_parts(task_id, namespace, payload, data is not None)
    return b"".join([head, *base64_pieces(data or b""), tail])


def error_envelope(task_id: str, namespace: str, exc: GatewayError) -> bytes:
    """An error reply: the same envelope with the error's code and text."""
    return orjson.dumps({
        "task_id": task_id,
        "namespace": namespace,
        "status_code": exc.status.code,
        "status_text": exc.status_text,
    })
