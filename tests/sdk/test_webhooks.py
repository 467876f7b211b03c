"""verify_webhook: genuine events pass; tampered, wrongly keyed, old, unsigned ones are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from multidict import CIMultiDict
from sami_client import WebhookVerificationError, sign_webhook, verify_webhook

SECRET = "whsec-0123456789abcdef"
JOB = {"id": "job-1", "status": "succeeded", "progress": 100.0,
       "result": {"vocals": {"url": "http://x/v.wav", "format": "wav", "size": 3}}}
BODY = json.dumps({"id": "evt-1", "type": "job.succeeded", "created_at": "2026-11-29T12:00:00Z",
                   "data": {"job": JOB}}).encode()


def signature(body: bytes, secret: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def headers(value: str) -> dict[str, str]:
    return {"Sami-Signature": value, "Sami-Event-Id": "evt-1"}


def test_a_genuine_event_is_parsed() -> None:
    now = int(time.time())
    event = verify_webhook(headers(f"t={now},v1={signature(BODY, SECRET, now)}"), BODY, SECRET)
    assert (event.id, event.type) == ("evt-1", "job.succeeded")
    assert event.job is not None and event.job.succeeded and event.job.result is not None
    assert event.job.result["vocals"].url == "http://x/v.wav"


def test_sign_webhook_is_what_verify_webhook_checks() -> None:
    assert verify_webhook(headers(sign_webhook(BODY, SECRET)), BODY, SECRET).type == "job.succeeded"


def test_header_names_in_any_case_and_from_a_multidict() -> None:
    value = sign_webhook(BODY, SECRET)
    assert verify_webhook({"sami-signature": value}, BODY, SECRET).id == "evt-1"
    assert verify_webhook(CIMultiDict({"SAMI-SIGNATURE": value}), BODY.decode(), SECRET).id == "evt-1"


def test_a_tampered_body_is_refused() -> None:
    value = sign_webhook(BODY, SECRET)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(headers(value), BODY.replace(b"succeeded", b"failed"), SECRET)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(headers(sign_webhook(BODY, "another-secret-0123456")), BODY, SECRET)


def test_an_old_timestamp_is_refused_even_when_correctly_signed() -> None:
    old = int(time.time()) - 301
    value = f"t={old},v1={signature(BODY, SECRET, old)}"
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(headers(value), BODY, SECRET)
    assert verify_webhook(headers(value), BODY, SECRET, tolerance=600).id == "evt-1"
    assert verify_webhook(headers(value), BODY, SECRET, tolerance=None).id == "evt-1"


def test_a_timestamp_from_the_future_is_refused() -> None:
    later = int(time.time()) + 3600
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(headers(f"t={later},v1={signature(BODY, SECRET, later)}"), BODY, SECRET)


def test_the_timestamp_is_signed_too() -> None:
    now = int(time.time())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers(f"t={now + 1},v1={signature(BODY, SECRET, now)}"), BODY, SECRET)


@pytest.mark.parametrize("value", ["", "garbage", "v1=abc", "t=notanumber,v1=abc", "t=12"])
def test_a_missing_or_malformed_header_is_refused(value: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers(value), BODY, SECRET)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook({"Content-Type": "application/json"}, BODY, SECRET)


def test_any_of_several_v1_signatures_may_match() -> None:
    now = int(time.time())
    good = signature(BODY, SECRET, now)
    stale = signature(BODY, "the-previous-secret-000", now)
    assert verify_webhook(headers(f"t={now},v1={stale},v1={good}"), BODY, SECRET).id == "evt-1"
    assert verify_webhook(headers(f"t={now}, v1={good}, v1={stale}"), BODY, SECRET).id == "evt-1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers(f"t={now},v1={stale},v1={stale}"), BODY, SECRET)


def test_a_signed_body_that_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="JSON"):
        verify_webhook(headers(sign_webhook(b"[1, 2]", SECRET)), b"[1, 2]", SECRET)
