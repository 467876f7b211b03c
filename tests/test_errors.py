"""The status-code table: documented rows unchanged, own codes distinct, the protocol page in sync."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sami_gateway.errors import Code, GatewayError, error, log_failure, status_table_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = {
    40000000: (400, "ClientError"), 40000010: (400, "InvalidData"), 40000011: (400, "EmptyData"),
    40000012: (400, "IllegalData"), 40000013: (400, "ExceededDuration"),
    40000016: (400, "ExceededDataSize"), 40000020: (400, "InvalidPayload"),
    40000021: (400, "EmptyPayload"), 40000022: (400, "IllegalPayload"), 40000023: (400, "EmptyURL"),
    40000024: (400, "FailedDownload"), 40000999: (400, "Unknown"), 40200001: (401, "InvalidAccess"),
    40200002: (401, "DeniedAccess"), 40200014: (400, "DeniedNamespace"), 20000000: (200, "OK"),
}


def test_documented_rows_keep_their_http_status_and_text() -> None:
    table = {member.value.code: (member.value.http, member.value.text) for member in Code}
    for code, row in DOCUMENTED.items():
        assert table[code] == row


def test_codes_are_unique_and_fit_int32() -> None:
    codes = [member.value.code for member in Code]
    assert len(codes) == len(set(codes))
    assert all(0 < code < 2**31 for code in codes)


def test_own_codes_do_not_reuse_documented_ones() -> None:
    own = [m.value for m in Code if m.value.code not in DOCUMENTED]
    assert {row.text for row in own} == {"NotFound", "MethodNotAllowed", "RequestTimeout", "InternalError",
                                         "QuotaExceeded", "ServerOverloaded", "ServiceUnavailable", "Timeout",
                                         "Forbidden", "Conflict", "PayloadTooLarge", "UnsupportedMediaType",
                                         "InsufficientStorage", "IdempotencyMismatch", "StorageQuotaExceeded"}
    assert all(str(row.code).startswith(str(row.http)) for row in own)


def test_status_text_carries_the_detail() -> None:
    assert GatewayError("IllegalToken", code=Code.DENIED_ACCESS).status_text == "DeniedAccess:IllegalToken"
    assert GatewayError(code=Code.EMPTY_URL).status_text == "EmptyURL"


def test_the_protocol_page_has_the_table() -> None:
    assert status_table_markdown() in (ROOT / "docs" / "protocol.md").read_text()


def test_a_failure_of_storage_away_is_one_warning_line_anything_else_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """Loops that go on after a failure (sweeper, webhook sender) log storage away or full without the
    traceback, which says nothing and comes every round of an outage; a bug keeps its traceback."""
    log = logging.getLogger("test.loop")
    for exc in (error(Code.BACKEND_UNAVAILABLE, "redis: TimeoutError"), KeyError("bug")):
        try:
            raise exc
        except Exception:  # noqa: BLE001 - what a loop does
            log_failure(log, "sweeping job %s failed", "job_1")
    away, bug = caplog.records
    assert (away.levelno, away.getMessage(), away.exc_info) == (
        logging.WARNING, "sweeping job job_1 failed: redis: TimeoutError", None)
    assert bug.levelno == logging.ERROR and bug.getMessage() == "sweeping job job_1 failed" and bug.exc_info
