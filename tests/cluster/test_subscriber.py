"""Pub/sub through outages, on a real redis-server: a silent connection is found by its pings,
connected again, and the listener told to look up what it missed."""

from __future__ import annotations

import asyncio

import pytest

from sami_gateway.cluster import subscriber as module
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.subscriber import Subscriber
from tests.jobs.live import wait_for
from tests.servers import Server


async def test_messages_flow_and_a_silent_connection_is_replaced(redis: Server,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "PING_SECONDS", 0.3)
    monkeypatch.setattr(module, "DEAD_SECONDS", 1.0)
    monkeypatch.setattr(module, "RECONNECT_SECONDS", 0.2)
    client = redis_client(redis.url)
    received: list[tuple[str, bytes]] = []
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    listener = Subscriber(client, ["sami:test"], lambda channel, data: received.append((channel, data)), on_reconnect)
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        await client.publish("sami:test", b"one")
        await asyncio.to_thread(wait_for, lambda: received, 5, "the first message")
        redis.pause()  # the connection stays open and silent: only the pings tell
        try:
            await asyncio.sleep(3.0)
            assert not listener.connected.is_set()
        finally:
            redis.resume()
        await asyncio.wait_for(reconnected.wait(), 15)
        await client.publish("sami:test", b"two")
        await asyncio.to_thread(wait_for, lambda: len(received) == 2, 5, "a message after the outage")
        assert received == [("sami:test", b"one"), ("sami:test", b"two")]
    finally:
        await listener.stop()
        await client.aclose()
