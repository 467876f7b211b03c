"""Webhook signatures: verify what the gateway POSTs (`Sami-Signature: t=<unix>,v1=<hex>`), or sign one."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import WebhookVerificationError
from .models import Job

__all__ = ["SIGNATURE_HEADER", "EVENT_ID_HEADER", "WebhookEvent", "verify_webhook", "sign_webhook"]

SIGNATURE_HEADER = "Sami-Signature"
EVENT_ID_HEADER = "Sami-Event-Id"
DEFAULT_TOLERANCE = 300  # seconds between the signature's `t` and the receiver's clock, either way


@dataclass(frozen=True)
class WebhookEvent:
    """A verified webhook: `type` is job.succeeded, job.failed or job.cancelled; `job` is the job it is about."""

    id: str
    type: str
    created_at: str | None
    data: Mapping[str, Any]
    job: Job | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    """A header from any mapping (dict, Starlette's, aiohttp's CIMultiDict), its name in any case."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return None if value is None else str(value)


def _parse_signature(value: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(text)
            except ValueError as exc:
                raise WebhookVerificationError(f"{SIGNATURE_HEADER} has a malformed timestamp") from exc
        elif key == "v1" and text:
            signatures.append(text.strip().lower())
    if timestamp is None:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} has no timestamp (t=)")
    if not signatures:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} has no v1 signature")
    return timestamp, signatures


def _expected(timestamp: int, body: bytes, secret: str | bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes | str, secret: str | bytes, timestamp: int | None = None) -> str:
    """The `Sami-Signature` value the gateway would send for `body` (for tests and tools)."""
    raw = body.encode() if isinstance(body, str) else body
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={_expected(when, raw, secret)}"


def verify_webhook(headers: Mapping[str, str] | Any, body: bytes | str, secret: str | bytes,
                   tolerance: float | None = DEFAULT_TOLERANCE, *, now: float | None = None) -> WebhookEvent:
    """Check a webhook's signature and age, then parse it; WebhookVerificationError if it is not genuine.

    `body` must be the raw bytes received (not re-serialized JSON). Any of several `v1=` values may match
    (a secret being rotated). `tolerance` bounds |now - t| in seconds; None turns the age check off.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    value = _header(headers, SIGNATURE_HEADER)
    if not value:
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is missing")
    timestamp, signatures = _parse_signature(value)
    expected = _expected(timestamp, raw, secret).encode()
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in signatures):
        raise WebhookVerificationError("no signature matches the body and secret")
    if tolerance is not None and abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise WebhookVerificationError(f"the signature's timestamp is more than {tolerance:g} s from this clock")
    try:
        event = json.loads(raw)
    except ValueError as exc:
        raise WebhookVerificationError("the body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    job = data.get("job")
    return WebhookEvent(id=str(event.get("id") or _header(headers, EVENT_ID_HEADER) or ""),
                        type=str(event.get("type") or ""), created_at=event.get("created_at"), data=data,
                        job=Job.from_dict(job) if isinstance(job, dict) and "id" in job else None, raw=event)
