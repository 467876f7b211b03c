"""Listening on Redis pub/sub channels for as long as the process runs, through Redis outages.

Messages are hints (an invoke answered, a job changed, work enqueued): the state they point at
is in Redis itself. A message published while the connection was down is lost, so after every
reconnection `on_reconnect` runs, and the listener looks up whatever it may have missed. A
connection that went silent without closing (a network partition) is found by pinging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from ..runtime.periodic import Background
from .redis_client import UNREACHABLE

log = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0
PING_SECONDS = 5.0  # a subscription quiet this long is pinged
DEAD_SECONDS = 12.0  # and one that answers nothing this long is connected again


class Subscriber:
    """Calls `on_message(channel, data)` for each message on `channels`, reconnecting as needed."""

    def __init__(self, client: aioredis.Redis, channels: Sequence[str],
                 on_message: Callable[[str, bytes], None],
                 on_reconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        self._client = client
        self._channels = list(channels)
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._task = Background("redis-subscriber", self._run)
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        first = True
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*self._channels)
                self.connected.set()
                if not first and self._on_reconnect is not None:
                    await self._on_reconnect()
                first = False
                await self._listen(pubsub)
            except UNREACHABLE as exc:
                if self.connected.is_set():
                    log.warning("redis subscription lost (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
                first = False
                await asyncio.sleep(RECONNECT_SECONDS)
            except Exception:  # noqa: BLE001 - a listener's bug must not end the subscription
                log.exception("redis subscription failed; reconnecting")
                self.connected.clear()
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _listen(self, pubsub: PubSub) -> None:
        """Hand each message on until the connection fails or stops answering pings."""
        heard = pinged = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    self._on_message(name, message["data"])
            if now - heard > PING_SECONDS and now - pinged > PING_SECONDS:
                await pubsub.ping("sami-subscriber")  # a quiet channel, or a dead connection?
                pinged = now
            if now - heard > DEAD_SECONDS:
                raise ConnectionError(f"no answer to a ping within {DEAD_SECONDS:g} s")
