"""Quotas kept in Redis, shared by two fronts: the same rules and answers as `QuotaTracker`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from sami_gateway.auth.quota import Quotas, QuotaTracker
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.redis_quota import RedisQuotas, held
from sami_gateway.config.limits import Quota
from sami_gateway.errors import Code, GatewayError
from tests.servers import Server

HOLD = 60.0


@pytest.fixture
async def clients(redis: Server) -> AsyncIterator[tuple[Redis, Redis]]:
    first, second = redis_client(redis.url), redis_client(redis.url)
    await first.flushdb()
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
def fronts(clients: tuple[Redis, Redis]) -> tuple[RedisQuotas, RedisQuotas]:
    return RedisQuotas(clients[0], HOLD), RedisQuotas(clients[1], HOLD)


async def refused(quotas: Quotas, appkey: str, quota: Quota) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        async with quotas.charge(appkey, quota):
            pass
    assert info.value.code is Code.QUOTA_EXCEEDED and info.value.status.http == 429
    return info.value


def same_answer(shared: GatewayError, local: GatewayError) -> bool:
    return (shared.detail, shared.headers) == (local.detail, local.headers)


async def test_concurrency_is_bounded_across_fronts(fronts: tuple[RedisQuotas, RedisQuotas],
                                                    clients: tuple[Redis, Redis]) -> None:
    quota, tracker = Quota(rate=100, burst=100, concurrent=2), QuotaTracker()
    async with AsyncExitStack() as held_open, AsyncExitStack() as local:
        await held_open.enter_async_context(fronts[0].charge("a", quota))
        second = AsyncExitStack()
        await second.enter_async_context(fronts[1].charge("a", quota))
        for _ in range(2):
            await local.enter_async_context(tracker.charge("a", quota))
        expected = await refused(tracker, "a", quota)
        for front in fronts:  # a third, whichever front it comes through
            assert same_answer(await refused(front, "a", quota), expected)
            assert expected.headers["Retry-After"] == "1"
        async with fronts[1].charge("b", quota):  # another appkey is not affected
            pass
        await second.aclose()  # one released: room for one more
        async with fronts[0].charge("a", quota):
            assert await clients[0].zcard(held("a")) == 2
    assert await clients[1].zcard(held("a")) == 0  # every hold released


async def test_burst_then_rate_with_retry_after(fronts: tuple[RedisQuotas, RedisQuotas]) -> None:
    quota, tracker = Quota(rate=0.5, burst=2, concurrent=5), QuotaTracker()
    for front in fronts:  # the burst is shared: one request through each front
        async with front.charge("a", quota), tracker.charge("a", quota):
            pass
    expected = await refused(tracker, "a", quota)
    assert expected.headers["Retry-After"] == "2"  # one token takes 2 s at 0.5/s
    for front in fronts:
        assert same_answer(await refused(front, "a", quota), expected)
    async with fronts[1].charge("b", quota):  # another appkey has its own bucket
        pass


async def test_the_bucket_refills_at_the_rate(fronts: tuple[RedisQuotas, RedisQuotas]) -> None:
    quota = Quota(rate=10, burst=1, concurrent=5)
    async with fronts[0].charge("a", quota):
        pass
    assert (await refused(fronts[1], "a", quota)).headers["Retry-After"] == "1"
    await asyncio.sleep(0.12)  # a token every 0.1 s
    async with fronts[1].charge("a", quota):
        pass


async def test_a_hold_lapses_after_hold_seconds(clients: tuple[Redis, Redis]) -> None:
    quotas, quota = RedisQuotas(clients[0], hold_seconds=0.3), Quota(rate=100, burst=100, concurrent=1)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(quotas.charge("a", quota))  # as if its front were killed meanwhile
        await refused(RedisQuotas(clients[1], 0.3), "a", quota)
        await asyncio.sleep(0.4)
        async with quotas.charge("a", quota):
            pass


async def test_an_unreachable_redis_is_a_503(fronts: tuple[RedisQuotas, RedisQuotas], redis: Server) -> None:
    quota = Quota(rate=100, burst=100, concurrent=2)
    redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as info:
            async with fronts[0].charge("a", quota):
                pass
        assert info.value.code is Code.BACKEND_UNAVAILABLE and time.monotonic() - started < 10
    finally:
        redis.resume()
    async with fronts[0].charge("a", quota):
        pass


async def test_a_release_lost_in_an_outage_is_sent_again_once_redis_answers(
        fronts: tuple[RedisQuotas, RedisQuotas], clients: tuple[Redis, Redis], monkeypatch: pytest.MonkeyPatch) -> None:
    """A request in flight when Redis went away (a partition, a connection reset): its release never
    reached Redis. It is sent again until Redis answers, so the slot is free within seconds, not HOLD
    (the request timeout and a minute) later, when the appkey would be refused 429 all along."""
    quota = Quota(rate=100, burst=100, concurrent=1)
    lost = [clients[0].zrem]

    async def zrem(*args: Any) -> int:
        if lost:
            lost.clear()
            raise RedisConnectionError("Connection reset by peer")
        return int(await clients[0].execute_command("ZREM", *args))
    async with fronts[0].charge("a", quota):
        monkeypatch.setattr(clients[0], "zrem", zrem)
    assert not lost, "the release was tried"
    await refused(fronts[1], "a", quota)  # held until the release goes through
    await released(clients[1], "a")
    async with fronts[1].charge("a", quota):
        pass


async def released(client: Redis, appkey: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while await client.zcard(held(appkey)):
        assert time.monotonic() < deadline, f"a slot of {appkey} still held {seconds:g} s later"
        await asyncio.sleep(0.1)
