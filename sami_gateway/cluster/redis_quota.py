"""Per-appkey quotas kept in Redis, so that every front charges the same buckets.

The same rules and answers as `QuotaTracker` (a token bucket for rate and burst, a bound on
concurrent requests), taken in one Lua script on Redis's own clock. A concurrent request is a
member of the appkey's sorted set of held requests, scored by when its hold lapses: a front
killed while holding one leaks it for `hold_seconds` at most. A release that fails because Redis
is away is sent again until Redis answers, so an outage does not leave the appkey's slots held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from ..config.limits import Quota
from ..errors import Code, GatewayError, error
from .keys import PREFIX
from .redis_client import UNREACHABLE, redis_unavailable

log = logging.getLogger(__name__)

TAKEN, TOO_MANY, TOO_FAST = 0, 1, 2  # what the script answers
RELEASE_RETRY_SECONDS = 1.0  # a release that met Redis away is sent again this often


def bucket(appkey: str) -> str:
    """Hash: the appkey's tokens and when they were counted (Redis time, seconds)."""
    return f"{PREFIX}quota:bucket:{appkey}"


def held(appkey: str) -> str:
    """Sorted set: the appkey's requests in progress, scored by when each hold lapses."""
    return f"{PREFIX}quota:held:{appkey}"


# KEYS: bucket, held. ARGV: rate, burst, concurrent, hold seconds, request id.
# Returns {TAKEN}, {TOO_MANY} or {TOO_FAST, tokens left (a string: Lua numbers reach Python as integers)}.
CHARGE_LUA = f"""
local rate, burst, concurrent, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = burst
if state[1] then tokens = math.min(burst, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate) end
local refill_ms = math.ceil(burst / rate * 1000) + 1000  -- a bucket left alone this long is full again
local function keep(left)
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', left), 'updated', string.format('%.17g', now))
  redis.call('PEXPIRE', KEYS[1], refill_ms)
end
keep(tokens)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.17g', now))
if redis.call('ZCARD', KEYS[2]) >= concurrent then return {{{TOO_MANY}}} end
if tokens < 1 then return {{{TOO_FAST}, string.format('%.17g', tokens)}} end
keep(tokens - 1)
redis.call('ZADD', KEYS[2], string.format('%.17g', now + hold), ARGV[5])
redis.call('PEXPIRE', KEYS[2], math.ceil(hold * 1000) + 1000)
return {{{TAKEN}}}
"""


class RedisQuotas:
    """`Quotas` shared by every front through Redis; answers exactly as `QuotaTracker` does."""

    def __init__(self, client: aioredis.Redis, hold_seconds: float) -> None:
        self._client = client
        self._hold = hold_seconds  # a held request counts for at most this long
        self._charge = client.register_script(CHARGE_LUA)
        self._retries: set[asyncio.Task[None]] = set()  # releases waiting for Redis to answer again

    async def _take(self, appkey: str, quota: Quota, request_id: str) -> None:
        with redis_unavailable():
            answer = await self._charge(keys=[bucket(appkey), held(appkey)],
                                        args=[quota.rate, quota.burst, quota.concurrent, self._hold, request_id])
        if answer[0] == TOO_MANY:
            raise error(Code.QUOTA_EXCEEDED, f"at most {quota.concurrent} concurrent requests", {"Retry-After": "1"})
        if answer[0] == TOO_FAST:
            wait = math.ceil((1 - float(answer[1])) / quota.rate)
            raise error(Code.QUOTA_EXCEEDED, f"at most {quota.rate:g} requests per second",
                        {"Retry-After": str(max(1, wait))})

    async def _release(self, appkey: str, request_id: str) -> None:
        try:
            await self._client.zrem(held(appkey), request_id)
        except UNREACHABLE as exc:  # the request's own answer stands; the release is sent again
            log.warning("quota of %s not released (%s): sent again until Redis answers", appkey, type(exc).__name__)
            task = asyncio.create_task(self._release_later(appkey, request_id, time.monotonic() + self._hold))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _release_later(self, appkey: str, request_id: str, lapses: float) -> None:
        """Release until Redis answers, or the hold has lapsed anyway: held past an outage, the slot
        would count against the appkey (429 at its `concurrent`) for up to `hold_seconds`."""
        while time.monotonic() < lapses:
            await asyncio.sleep(RELEASE_RETRY_SECONDS)
            with contextlib.suppress(*UNREACHABLE):
                await self._client.zrem(held(appkey), request_id)
                return

    async def close(self) -> None:
        """Stop sending the releases still waiting for Redis (their holds lapse by themselves)."""
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)

    @asynccontextmanager
    async def charge(self, appkey: str, quota: Quota) -> AsyncIterator[None]:
        """Hold one of the appkey's concurrent requests for the duration of the block."""
        request_id = secrets.token_hex(8)
        try:
            await self._take(appkey, quota, request_id)
        except BaseException as exc:  # a lost reply may still have taken the slot: give it back
            if not (isinstance(exc, GatewayError) and exc.code is Code.QUOTA_EXCEEDED):
                await self._release(appkey, request_id)
            raise
        try:
            yield
        finally:
            await self._release(appkey, request_id)
