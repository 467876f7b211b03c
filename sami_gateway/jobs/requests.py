"""The gateway's part of a job request: input, name, metadata, webhook and copies.

`model`, `stems` and `output` are the namespace's (`JobNamespace.parse_job`); everything else is
checked here, before anything is stored or fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from yarl import URL

from ..errors import Code, GatewayError, error
from ..protocol.envelope import decode_data

MAX_NAME_CHARS = 200
MAX_METADATA_BYTES = 4096
# Objects and arrays inside one another: the job is stored and sent a few levels deeper still (a
# webhook's `data.job.metadata`), and orjson refuses past 254, so far deeper metadata could never be written.
MAX_METADATA_DEPTH = 32
MAX_COPIES = 32  # more targets than any model has stems
GATEWAY_FIELDS = frozenset({"input", "name", "metadata", "webhook_url", "copy_results_to"})
NAMESPACE_FIELDS = frozenset({"model", "stems", "output"})


@dataclass(frozen=True)
class JobInput:
    """Exactly one of: a URL to fetch when the job runs, an upload, or the bytes themselves."""

    url: str | None = None
    upload_id: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class JobRequest:
    """A job request, checked: the namespace's fields are kept apart for `parse_job`."""

    input: JobInput | None  # None: the file part of a multipart request
    namespace_fields: Mapping[str, Any]
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None
    copy_results_to: Mapping[str, str] = field(default_factory=dict)


def _illegal(message: str) -> Exception:
    return error(Code.ILLEGAL_PAYLOAD, message)


def http_url(value: Any, label: str) -> str:
    """An absolute http(s) URL with a host (where it may lead is checked when it is used)."""
    if not isinstance(value, str) or not value:
        raise _illegal(f"{label} must be a URL")
    try:
        url = URL(value)
    except ValueError:
        raise _illegal(f"{label} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _illegal(f"{label} must be an http or https URL")
    return value


def parse_input(value: Any) -> JobInput:
    if not isinstance(value, dict) or len(value) != 1:
        raise _illegal("input must be an object with exactly one of url, upload_id, data")
    (kind, item), = value.items()
    if kind == "url":
        return JobInput(url=http_url(item, "input.url"))
    if kind == "upload_id":
        if not isinstance(item, str) or not item:
            raise _illegal("input.upload_id must be a string")
        return JobInput(upload_id=item)
    if kind == "data":
        if not isinstance(item, str):
            raise error(Code.INVALID_DATA, "input.data must be a base64 string")
        try:
            data = decode_data(item)  # invoke's decoder: strict, padding bits zero
        except GatewayError as exc:
            raise error(Code.INVALID_DATA, f"input.{exc.detail}") from None
        if not data:
            raise error(Code.EMPTY_DATA, "input.data is empty")
        return JobInput(data=data)
    raise _illegal("input must have one of url, upload_id, data")


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise _illegal(f"name must be a string of at most {MAX_NAME_CHARS} characters")
    return value


def json_depth(value: Any) -> int:
    """How many objects and arrays are nested in `value` at its deepest (a scalar is 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _metadata(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _illegal("metadata must be a JSON object")
    if json_depth(value) > MAX_METADATA_DEPTH:
        raise _illegal(f"metadata may nest objects and arrays at most {MAX_METADATA_DEPTH} deep")
    if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
        raise _illegal(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


def _copies(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_COPIES:
        raise _illegal("copy_results_to must be an object of stem to URL")
    return {str(stem): http_url(url, f"copy_results_to.{stem}") for stem, url in value.items()}


def parse_job_request(body: Any, *, has_file: bool = False) -> JobRequest:
    """Check a job request's JSON (a multipart request's `params`, whose input is its file part)."""
    if not isinstance(body, dict):
        raise error(Code.INVALID_PAYLOAD, "the job request must be a JSON object")
    unknown = sorted(set(body) - GATEWAY_FIELDS - NAMESPACE_FIELDS)
    if unknown:
        raise _illegal(f"unknown fields {unknown}")
    if has_file:
        if "input" in body:
            raise _illegal("a multipart request's input is its file part: params must not have input")
        job_input = None
    elif "input" not in body:
        raise error(Code.EMPTY_URL, "input is required: one of url, upload_id, data")
    else:
        job_input = parse_input(body["input"])
    webhook = body.get("webhook_url")
    return JobRequest(
        input=job_input,
        namespace_fields={key: body[key] for key in NAMESPACE_FIELDS if key in body},
        name=_name(body.get("name")), metadata=_metadata(body.get("metadata")),
        webhook_url=None if webhook is None else http_url(webhook, "webhook_url"),
        copy_results_to=_copies(body.get("copy_results_to")))


def fingerprint(request: JobRequest, input_sha256: str) -> str:
    """What makes two job requests the same request, as a SHA-256: the gateway's fields and the
    namespace's as sent, and the input: its URL, else its bytes' hash `input_sha256` (the same bytes
    sent as `data`, as a multipart request's file or in an upload are the same input)."""
    url = None if request.input is None else request.input.url
    canonical = {"input": {"url": url} if url is not None else {"sha256": input_sha256},
                 "fields": dict(request.namespace_fields), "name": request.name, "metadata": dict(request.metadata),
                 "webhook_url": request.webhook_url, "copy_results_to": dict(request.copy_results_to)}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
