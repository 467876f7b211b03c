"""The SDK's exceptions, and the one place an error answer of the gateway becomes one."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SamiClientError", "SamiConnectionError", "WaitTimeout", "JobNotSucceeded", "WebhookVerificationError",
    "SamiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "PayloadTooLarge",
    "UnsupportedMediaType", "QuotaExceeded", "ServerError", "Unavailable", "GatewayTimeout", "error_from_answer",
]


class SamiClientError(Exception):
    """Base of every exception this SDK raises."""


class SamiConnectionError(SamiClientError):
    """The gateway could not be reached, or the connection broke, after the retries allowed."""


class WaitTimeout(SamiClientError, TimeoutError):
    """`wait` gave up before the job ended; `job` is its last state seen."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


class JobNotSucceeded(SamiClientError):
    """Results were asked for a job that has not succeeded; `job` is its state."""

    def __init__(self, message: str, job: Any) -> None:
        super().__init__(message)
        self.job = job


class WebhookVerificationError(SamiClientError):
    """A webhook's signature is missing, malformed or wrong, or its timestamp is out of tolerance."""


class SamiError(SamiClientError):
    """An error answered by the gateway: HTTP status, SAMI `status_code`/`status_text`, message, request id."""

    def __init__(self, http_status: int, status_code: int, status_text: str, message: str,
                 request_id: str | None = None, *, retry_after: float | None = None,
                 body: Any = None) -> None:
        super().__init__(f"{http_status} {status_text} ({status_code}): {message}"
                         + (f" [request {request_id}]" if request_id else ""))
        self.http_status = http_status
        self.status_code = status_code
        self.status_text = status_text
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after  # seconds, from the answer's Retry-After
        self.body = body  # the parsed JSON answer (or its text)


class BadRequest(SamiError):
    """400: the request or its audio was refused (e.g. IllegalPayload, IllegalData)."""


class Unauthorized(SamiError):
    """401: unknown appkey, missing, bad or expired token (or, for GetToken, a bad signature)."""


class Forbidden(SamiError):
    """403: not allowed (an expired signed URL, an access key not allowed on the appkey)."""


class NotFound(SamiError):
    """404: no such job, upload or path (another appkey's job is answered so too)."""


class Conflict(SamiError):
    """409: the job is not in a state that allows this (e.g. results of an unfinished job)."""


class PayloadTooLarge(SamiError):
    """413: the upload is larger than the gateway accepts."""


class UnsupportedMediaType(SamiError):
    """415: the content type is not one the route accepts."""


class QuotaExceeded(SamiError):
    """429: the appkey's quota is used up for now; `retry_after` says when to try again."""


class ServerError(SamiError):
    """5xx: the gateway failed, is overloaded or timed out."""


class Unavailable(ServerError):
    """503: overloaded or shutting down; `retry_after` says when to try again."""


class GatewayTimeout(ServerError):
    """504: the request ran past the gateway's time limit."""


_BY_HTTP_STATUS: dict[int, type[SamiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 429: QuotaExceeded, 503: Unavailable, 504: GatewayTimeout,
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta seconds or an HTTP date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _fields(body: Any) -> tuple[int, str, str, str | None] | None:
    """(status_code, status_text, message, request_id) from one of the gateway's three error shapes."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):  # the Jobs API
        return (int(error.get("status_code") or 0), str(error.get("status_text") or ""),
                str(error.get("message") or ""), body.get("request_id"))
    metadata = body.get("ResponseMetadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("Error"), dict):  # GetToken (Volcengine OpenAPI)
        failure = metadata["Error"]
        return (int(failure.get("CodeN") or 0), str(failure.get("Code") or ""),
                str(failure.get("Message") or ""), metadata.get("RequestId"))
    if "status_code" in body:  # the SAMI invoke envelope: the detail is in `Name:detail`
        text = str(body.get("status_text") or "")
        return int(body["status_code"] or 0), text, text.partition(":")[2] or text, body.get("task_id")
    return None


def error_from_answer(http_status: int, content: bytes, headers: Mapping[str, str],
                      reason: str = "") -> SamiError:
    """The SamiError subclass for an error answer, whichever of the gateway's JSON shapes it has."""
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = content.decode("utf-8", "replace")[:500]
    fields = _fields(body)
    if fields is None:  # not the gateway's JSON (a proxy's page, say)
        text = body if isinstance(body, str) and body else reason or "error"
        fields = (0, reason or f"HTTP{http_status}", text.strip()[:200], None)
    status_code, status_text, message, request_id = fields
    kind = _BY_HTTP_STATUS.get(http_status)
    if kind is None:
        kind = ServerError if http_status >= 500 else SamiError
    return kind(http_status, status_code, status_text, message, request_id,
                retry_after=parse_retry_after(headers.get("retry-after")), body=body)
