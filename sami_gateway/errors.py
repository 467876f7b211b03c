"""The one status-code table: SAMI's documented codes and the gateway's own."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Status:
    """One row of the table: HTTP status, SAMI status_code and status_text."""

    http: int
    code: int
    text: str
    meaning: str


class Code(Enum):
    """Every status the gateway answers with.

    The rows up to DENIED_NAMESPACE are SAMI's documented codes with their
    documented HTTP statuses; the rest are the gateway's own, in ranges that
    no documented code uses.
    """

    OK = Status(200, 20000000, "OK", "success")
    CLIENT_ERROR = Status(400, 40000000, "ClientError", "generic client error (malformed request)")
    INVALID_DATA = Status(400, 40000010, "InvalidData", "`data` is not strict standard base64")
    EMPTY_DATA = Status(400, 40000011, "EmptyData", "empty data, or the url download gave 0 bytes")
    ILLEGAL_DATA = Status(400, 40000012, "IllegalData", "data cannot be decoded as audio")
    EXCEEDED_DURATION = Status(400, 40000013, "ExceededDuration", "audio longer than the namespace allows")
    EXCEEDED_DATA_SIZE = Status(400, 40000016, "ExceededDataSize", "input larger than the namespace allows")
    INVALID_PAYLOAD = Status(400, 40000020, "InvalidPayload", "`payload` is not a JSON object in a string")
    EMPTY_PAYLOAD = Status(400, 40000021, "EmptyPayload", "payload missing where required")
    ILLEGAL_PAYLOAD = Status(400, 40000022, "IllegalPayload", "payload field of wrong type or out of range")
    EMPTY_URL = Status(400, 40000023, "EmptyURL", "neither `data` nor `payload.url`")
    FAILED_DOWNLOAD = Status(400, 40000024, "FailedDownload", "`payload.url` could not be fetched")
    UNKNOWN_CLIENT_ERROR = Status(400, 40000999, "Unknown", "other client error")
    INVALID_ACCESS = Status(401, 40200001, "InvalidAccess", "missing or unknown appkey")
    DENIED_ACCESS = Status(401, 40200002, "DeniedAccess", "missing, bad or expired token")
    DENIED_NAMESPACE = Status(400, 40200014, "DeniedNamespace", "namespace unknown or not allowed for the appkey")
    # The gateway's own codes.
    FORBIDDEN = Status(403, 40300001, "Forbidden", "a signed URL whose signature is wrong or has expired")
    NOT_FOUND = Status(404, 40400001, "NotFound", "no such path")
    JOB_NOT_FOUND = Status(404, 40400002, "NotFound", "no such job or upload for this appkey")
    METHOD_NOT_ALLOWED = Status(405, 40500001, "MethodNotAllowed", "wrong HTTP method for the path")
    CONFLICT = Status(409, 40900001, "Conflict",
                      "the job or upload is not in a state that allows it (e.g. results of an unfinished job)")
    PAYLOAD_TOO_LARGE = Status(413, 41300001, "PayloadTooLarge", "an upload larger than its `max_bytes`")
    UNSUPPORTED_MEDIA_TYPE = Status(415, 41500001, "UnsupportedMediaType",
                                    "a job request that is neither JSON nor multipart/form-data")
    IDEMPOTENCY_MISMATCH = Status(422, 42200001, "IdempotencyMismatch",
                                  "an `Idempotency-Key` used within 24 h for a different job request")
    BODY_TIMEOUT = Status(408, 40800001, "RequestTimeout",
                          "the request body did not arrive within `SAMI_BODY_TIMEOUT`; the connection is closed")
    QUOTA_EXCEEDED = Status(429, 42900001, "QuotaExceeded",
                            "the appkey's request rate or concurrency quota is used up; retry after `Retry-After`")
    STORAGE_QUOTA_EXCEEDED = Status(429, 42900002, "StorageQuotaExceeded",
                                    "the appkey holds as many bytes, uploads or jobs as its storage quota allows "
                                    "(`error.quota` says which); delete some or wait for them to expire")
    INTERNAL_ERROR = Status(500, 50000001, "InternalError", "unexpected server error (logged with the task_id)")
    OVERLOADED = Status(503, 50300001, "ServerOverloaded", "admission bound reached; retry after `Retry-After` seconds")
    UNAVAILABLE = Status(503, 50300002, "ServiceUnavailable",
                         "shutting down: admitted requests finish, new ones are refused")
    BACKEND_UNAVAILABLE = Status(503, 50300003, "ServiceUnavailable",
                                 "Redis or the object storage cannot be reached, or no worker is alive "
                                 "(scale-out); retry after `Retry-After`")
    TIMEOUT = Status(504, 50400001, "Timeout", "the request ran past `SAMI_REQUEST_TIMEOUT`")
    INSUFFICIENT_STORAGE = Status(507, 50700001, "InsufficientStorage",
                                  "the gateway's disk is full (files or the job store cannot be written); "
                                  "retry after `Retry-After`")


class GatewayError(Exception):
    """An answer that is not success: carries its row of the table and a detail."""

    code: Code = Code.UNKNOWN_CLIENT_ERROR

    def __init__(self, detail: str = "", *, code: Code | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.__class__.code.value.text)
        if code is not None:
            self.code = code
        self.detail = detail
        self.headers = dict(headers or {})

    @property
    def status(self) -> Status:
        return self.code.value

    @property
    def status_text(self) -> str:
        """`Name` or `Name:detail`, as SAMI writes it."""
        text = self.status.text
        return f"{text}:{self.detail}" if self.detail else text


def error(code: Code, detail: str = "", headers: dict[str, str] | None = None) -> GatewayError:
    """Build the GatewayError for a row of the table."""
    return GatewayError(detail, code=code, headers=headers)


STORE_TROUBLE = frozenset({Code.BACKEND_UNAVAILABLE, Code.INSUFFICIENT_STORAGE})


def store_trouble(exc: BaseException) -> bool:
    """Whether `exc` says storage is away or full: the work is not at fault and can run again later."""
    return isinstance(exc, GatewayError) and exc.code in STORE_TROUBLE


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled: storage away or full as one warning line (it passes, and its
    traceback says nothing), anything else with its traceback."""
    exc = sys.exc_info()[1]
    if isinstance(exc, GatewayError) and store_trouble(exc):
        logger.warning(message + ": %s", *args, exc.detail)
    else:
        logger.exception(message, *args)


def status_table_markdown() -> str:
    """The table as Markdown, for the README (kept in sync by a test)."""
    lines = ["| HTTP | status_code | status_text | meaning |", "|---|---|---|---|"]
    for member in Code:
        row = member.value
        lines.append(f"| {row.http} | {row.code} | {row.text} | {row.meaning} |")
    return "\n".join(lines)
