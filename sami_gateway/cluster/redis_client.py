"""The Redis connection every front and worker uses, and what its failures mean to a client.

Timeouts are short on purpose: a Redis that stops answering (paused, partitioned) turns into a
503 with Retry-After within a few seconds, never into a hung request, and every call simply
works again once Redis is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import Code, error

SOCKET_TIMEOUT = 3.0  # seconds one command may take before the front answers 503
RETRY_AFTER = "5"
# Redis away, or unable to take writes for now: loading its data after a restart, a replica just
# after a failover, out of memory under `noeviction`. All of them pass; none is the client's fault.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, BusyLoadingError,
               ReadOnlyError, OutOfMemoryError)


def redis_client(url: str) -> aioredis.Redis:
    """A pooled client for `url` (bytes in, bytes out)."""
    return aioredis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=2.0,
                                   health_check_interval=5, retry_on_timeout=False, decode_responses=False)


@contextmanager
def redis_unavailable() -> Iterator[None]:
    """Redis unreachable, too slow or refusing writes for now: 503 BACKEND_UNAVAILABLE with Retry-After."""
    try:
        yield
    except UNREACHABLE as exc:
        raise error(Code.BACKEND_UNAVAILABLE, f"redis: {type(exc).__name__}", {"Retry-After": RETRY_AFTER}) from exc
