"""The SAMI invoke envelope: parsing a request, building a reply (no aiohttp here)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import Code, GatewayError, error

SUPPORTED_VERSIONS = frozenset({"v4"})
ROUTING_FIELDS = ("appkey", "token", "namespace", "version")


@dataclass(frozen=True)
class InvokeRequest:
    """A parsed invoke request: routing fields, raw input bytes and the payload object."""

    task_id: str
    appkey: str
    token: str
    namespace: str
    version: str | None
    data_b64: str
    payload: dict[str, Any]

    @property
    def data_size(self) -> int:
        """Size in bytes of `data` once decoded, known without decoding it."""
        return decoded_size(self.data_b64)


def new_task_id() -> str:
    return str(uuid.uuid4())


def decoded_size(text: str) -> int:
    """Bytes that a padded base64 text decodes to."""
    if not text:
        return 0
    return len(text) // 4 * 3 - text[-2:].count("=")


def decode_data(text: str) -> bytes:
    """Decode strict standard padded base64 (RFC 4648 section 4)."""
    padding = len(text) - len(text.rstrip("="))
    if len(text) % 4 or padding > 2 or not text.isascii():
        raise error(Code.INVALID_DATA, "data is not standard padded base64")
    try:
        # strict_mode refuses whitespace, URL-safe characters and misplaced padding.
        data = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as exc:
        raise error(Code.INVALID_DATA, "data is not standard padded base64") from exc
    # Only the last quantum can carry non-zero padding bits ("QR==" would silently become "QQ==").
    if text and base64.b64encode(data[-(len(data) % 3 or 3):]).decode() != text[-4:]:
        raise error(Code.INVALID_DATA, "data has non-zero padding bits")
    return data


def _json_object(text: bytes | str, code: Code, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise error(code, f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise error(code, f"{what} is not a JSON object")
    return value


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of the request body; an empty body is an empty object."""
    return _json_object(body, Code.CLIENT_ERROR, "body") if body.strip() else {}


def parse_payload(value: Any) -> dict[str, Any]:
    """`payload` is a JSON object serialised into a string; absent or empty means {}."""
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise error(Code.INVALID_PAYLOAD, "payload must be a JSON string")
    return _json_object(value, Code.INVALID_PAYLOAD, "payload")


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


def parse_invoke(task_id: str, query: Mapping[str, str], body: bytes) -> InvokeRequest:
    """Validate the envelope of an invoke request, without touching auth or the namespace."""
    obj = parse_body(body)
    fields = {name: routing_field(name, query, obj) for name in ROUTING_FIELDS}
    version = fields["version"] or None
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise error(Code.CLIENT_ERROR, f"unsupported version {version!r}")
    data = obj.get("data", "")
    if data is None:
        data = ""
    if not isinstance(data, str):
        raise error(Code.INVALID_DATA, "data must be a base64 string")
    return InvokeRequest(
        task_id=task_id,
        appkey=fields["appkey"],
        token=fields["token"],
        namespace=fields["namespace"],
        version=version,
        data_b64=data,
        payload=parse_payload(obj.get("payload")),
    )


def envelope(task_id: str, namespace: str, *, data: bytes | None = None,
             payload: Mapping[str, Any] | None = None) -> bytes:
    """A success reply: `data` as standard padded base64, `payload` as a JSON string."""
    reply: dict[str, Any] = {
        "task_id": task_id,
        "namespace": namespace,
        "status_code": Code.OK.value.code,
        "status_text": Code.OK.value.text,
        "payload": orjson.dumps(payload or {}).decode(),
    }
    if data is not None:
        reply["data"] = base64.b64encode(data).decode("ascii")
    return orjson.dumps(reply)


def error_envelope(task_id: str, namespace: str, exc: GatewayError) -> bytes:
    """An error reply: the same envelope with the error's code and text."""
    return orjson.dumps({
        "task_id": task_id,
        "namespace": namespace,
        "status_code": exc.status.code,
        "status_text": exc.status_text,
    })
