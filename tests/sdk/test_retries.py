"""Retries: idempotent calls wait as Retry-After says; other calls are not repeated unless asked."""

from __future__ import annotations

import time

import pytest
from sami_client import AsyncSamiClient, QuotaExceeded, SamiClient, SamiConnectionError, Unavailable
from sami_client._http import RetryPolicy

from .fake_gateway import TOKEN, Answer, FakeGateway, error_answer
from .test_errors import free_port


def overloaded(seconds: str = "1") -> Answer:
    return error_answer(503, 50300001, "ServerOverloaded", "busy", **{"Retry-After": seconds})


def test_a_get_waits_as_retry_after_says_then_succeeds(fake: FakeGateway, client: SamiClient) -> None:
    fake.add_job("job-1")
    fake.script[("GET", "/api/v1/jobs/job-1")] += [overloaded(), overloaded()]
    started = time.monotonic()
    assert client.get("job-1").status == "succeeded"
    assert time.monotonic() - started >= 2.0
    assert len(fake.requests_to("GET", "/api/v1/jobs/job-1")) == 3


async def test_the_async_client_retries_the_same_way(fake: FakeGateway, aclient: AsyncSamiClient) -> None:
    fake.add_job("job-1")
    fake.script[("GET", "/api/v1/jobs/job-1")] += [overloaded(), overloaded()]
    started = time.monotonic()
    assert (await aclient.get("job-1")).status == "succeeded"
    assert time.monotonic() - started >= 2.0
    assert len(fake.requests_to("GET", "/api/v1/jobs/job-1")) == 3


def test_retries_stop_at_max_retries(fake: FakeGateway) -> None:
    fake.add_job("job-1")
    fake.script[("GET", "/api/v1/jobs/job-1")] += [overloaded("0")] * 5
    with SamiClient(fake.url, TOKEN, max_retries=2) as client, pytest.raises(Unavailable) as refused:
        client.get("job-1")
    assert refused.value.retry_after == 0.0
    assert len(fake.requests_to("GET", "/api/v1/jobs/job-1")) == 3


def test_a_retry_after_beyond_the_max_wait_is_not_waited_for(fake: FakeGateway) -> None:
    fake.add_job("job-1")
    quota = error_answer(429, 42900001, "QuotaExceeded", "slow down", **{"Retry-After": "120"})
    fake.script[("GET", "/api/v1/jobs/job-1")].append(quota)
    started = time.monotonic()
    with SamiClient(fake.url, TOKEN, max_retry_wait=5) as client, pytest.raises(QuotaExceeded) as refused:
        client.get("job-1")
    assert time.monotonic() - started < 2 and refused.value.retry_after == 120.0
    assert len(fake.requests_to("GET", "/api/v1/jobs/job-1")) == 1


def test_invoke_is_not_retried_on_503_unless_asked(fake: FakeGateway, client: SamiClient) -> None:
    fake.script[("POST", "/api/v1/invoke")] += [overloaded("0"), overloaded("0")]
    with pytest.raises(Unavailable):
        client.invoke("app", data=b"RIFF")
    assert len(fake.requests_to("POST", "/api/v1/invoke")) == 1
    result = client.invoke("app", data=b"RIFF", retries=1)  # the second 503, then a success
    assert result.data == b"RIFF"
    assert len(fake.requests_to("POST", "/api/v1/invoke")) == 3


def test_submit_is_retried_with_the_same_idempotency_key(fake: FakeGateway, client: SamiClient) -> None:
    fake.script[("POST", "/api/v1/jobs")].append(overloaded("0"))
    job = client.submit(url="https://example.com/song.mp3")
    sent = fake.requests_to("POST", "/api/v1/jobs")
    assert len(sent) == 2 and job.id == "job-1"
    keys = {seen.headers["Idempotency-Key"] for seen in sent}
    assert len(keys) == 1 and len(keys.pop()) >= 16
    assert client.submit(url="https://example.com/song.mp3").id == "job-2"  # another call, another key


def test_connection_errors_are_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with SamiClient(f"http://127.0.0.1:{port}", TOKEN, max_retries=2) as client, \
            pytest.raises(SamiConnectionError):
        client.get("job-1")
    assert time.monotonic() - started >= 0.25 + 0.5  # two backoffs: at least half of 0.5 s and of 1 s


def test_backoff_grows_with_jitter_and_is_bounded() -> None:
    policy = RetryPolicy(max_retries=10, max_wait=3.0)
    delays = [policy.delay(attempt, None) for attempt in range(10)]
    assert all(delay is not None and 0 < delay <= 3.0 for delay in delays)
    assert 0.25 <= (delays[0] or 0) <= 0.5 and 2.0 <= (delays[3] or 0) <= 3.0
    assert policy.delay(10, None) is None
