"""What only scale-out's work queue does, on a real redis-server (the contract both queues keep is
tests/test_work_queue.py): another worker takes over a dead one's lease, the pending list says who
holds what, heartbeats, a leaving worker, an unreachable Redis, a take whose answer was lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sami_gateway.cluster import keys
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.workqueue import RedisWorkQueue
from sami_gateway.errors import Code, GatewayError
from tests.servers import Server


@pytest.fixture
async def client(redis: Server) -> AsyncIterator[aioredis.Redis]:
    connection = redis_client(redis.url)
    await connection.flushdb()
    yield connection
    await connection.aclose()


async def test_a_lapsed_lease_is_taken_over_and_counted(client: aioredis.Redis) -> None:
    dead, alive = RedisWorkQueue(client, "dead", lease=0.3), RedisWorkQueue(client, "alive", lease=0.3)
    await dead.enqueue("batch", "k", keys.JOB, "job-1")
    held = await dead.take(["batch"])
    assert held is not None and held.attempt == 0
    assert await alive.reclaim(3) == ([], [])  # not idle long enough yet
    await asyncio.sleep(0.4)
    requeued, exhausted = await alive.reclaim(3)
    assert [w.id for w in requeued] == ["job-1"] and exhausted == []
    assert await dead.renew(held) is False  # the dead worker's lease is gone
    again = await alive.take(["batch"])
    assert again is not None and again.id == "job-1" and again.attempt == 1
    assert again.enqueued == held.enqueued


async def test_the_pending_list_names_the_holder_that_took_a_lease_over(client: aioredis.Redis) -> None:
    """The lease table is the group's pending list: after a takeover it names the new holder, and the
    old holder's renewal does not claim the entry back."""
    slow, reaper = RedisWorkQueue(client, "slow", lease=0.1), RedisWorkQueue(client, "reaper", lease=0.1)
    await slow.enqueue("batch", "k", keys.JOB, "last-try")
    held = await slow.take(["batch"])
    assert held is not None
    await asyncio.sleep(0.15)
    _, exhausted = await reaper.reclaim(1)
    assert await slow.renew(held) is False
    pending = await client.xpending_range(keys.stream(held.cls, held.appkey), keys.GROUP, "-", "+", 10)
    assert [entry["consumer"] for entry in pending] == [b"reaper"]
    await reaper.done(exhausted[0])


async def test_heartbeats_count_the_workers_alive(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w", lease=5)
    assert await queue.workers_alive() == 0
    await queue.heartbeat()
    await RedisWorkQueue(client, "w2", lease=5).heartbeat()
    assert await queue.workers_alive() == 2
    await queue.leave()
    assert await queue.workers_alive() == 1


async def test_unreachable_redis_is_a_503(redis: Server, client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w", lease=5)
    redis.pause()
    try:
        with pytest.raises(GatewayError) as info:
            await queue.enqueue("batch", "k", keys.JOB, "j")
        assert info.value.code is Code.BACKEND_UNAVAILABLE and info.value.status.http == 503
    finally:
        redis.resume()
    await queue.enqueue("batch", "k", keys.JOB, "after")
    # The refused command may still have reached Redis (a timeout does not say it was not applied:
    # that is why job submission is idempotent); what follows the pause works again.
    taken = [(await queue.take(["batch"])).id for _ in range((await queue.depth())["batch"].queued)]  # type: ignore[union-attr]
    assert taken[-1] == "after" and set(taken) <= {"j", "after"}


async def test_released_work_goes_to_the_end_of_its_appkeys_line(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "stopping", lease=60)
    await queue.enqueue("batch", "k", keys.JOB, "long-job")
    await queue.enqueue("batch", "k", keys.JOB, "next-job")
    held = await queue.take(["batch"])
    assert held is not None and await queue.release(held) is True
    ids = [(await queue.take(["batch"])).id for _ in range(2)]  # type: ignore[union-attr]
    assert ids == ["next-job", "long-job"]  # a stream is appended to: its entry is added anew


async def test_a_leaving_worker_is_forgotten_once_it_holds_nothing(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "leaving", lease=10)
    await queue.enqueue("batch", "k", keys.JOB, "j")
    held = await queue.take(["batch"])
    assert held is not None
    await queue.leave()  # still holding: its consumer stays, or its entry would be lost
    stream = keys.stream("batch", "k")
    assert [c["name"] for c in await client.xinfo_consumers(stream, keys.GROUP)] == [b"leaving"]
    await queue.done(held)
    await queue.leave()
    assert await client.xinfo_consumers(stream, keys.GROUP) == []


async def test_a_backlog_of_a_thousand_does_not_delay_another_appkey(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w", lease=10)
    async with client.pipeline(transaction=False) as pipe:
        for n in range(1000):
            pipe.xadd(keys.stream("batch", "busy"), {"kind": keys.JOB, "id": f"busy-{n}", "attempt": "0",
                                                     "enqueued": "0"})
        await pipe.execute()
    await queue.enqueue("batch", "busy", keys.JOB, "busy-1000")  # registers the backlog's stream
    first = await queue.take(["batch"])
    await queue.enqueue("batch", "quiet", keys.JOB, "quiet-0")  # the other appkey's one job, behind 1001
    second = await queue.take(["batch"])
    assert first is not None and second is not None
    assert (first.id, second.id) == ("busy-0", "quiet-0")
    assert (await queue.depth())["batch"].queued == 1000



class ReplyCutter:
    """A TCP proxy before Redis that, while `cut`, passes each command on and closes the client's
    connection instead of passing the reply back: the command ran, its answer was lost."""

    def __init__(self, redis: Server) -> None:
        address = redis.url.removeprefix("redis://").split("/")[0]
        self.host, self.port = address.split(":")[0], int(address.split(":")[1])
        self.cut = False
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        redis_in, redis_out = await asyncio.open_connection(self.host, self.port)
        for pump in (self._pump(client_in, redis_out, False, client_out),
                     self._pump(redis_in, client_out, True, redis_out)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool,
                    other: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if replies and self.cut:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()
            other.close()


async def test_a_take_whose_answer_was_lost_is_given_back_to_the_retry(redis: Server, client: aioredis.Redis) -> None:
    cutter = ReplyCutter(redis)
    async with cutter as url:
        through = redis_client(url)
        worker, reaper = RedisWorkQueue(through, "w", lease=0.3), RedisWorkQueue(client, "r", lease=0.3)
        assert await worker.take(["batch"]) is None  # the take script is loaded
        await reaper.enqueue("batch", "k", keys.JOB, "job-1")
        cutter.cut = True
        for _ in range(3):  # three blips, each after Redis ran the take
            with pytest.raises(GatewayError) as info:
                await worker.take(["batch"])
            assert info.value.code is Code.BACKEND_UNAVAILABLE
        cutter.cut = False
        held = await worker.take(["batch"])
        assert held is not None and (held.id, held.attempt) == ("job-1", 0)
        assert await worker.take(["batch"]) is None  # given back once; the next take is a new one
        await asyncio.sleep(0.2)
        assert await worker.renew(held) is True
        await asyncio.sleep(0.2)
        assert await reaper.reclaim(1) == ([], [])  # its lease is held: no attempt spent, nothing exhausted
        await worker.done(held)
        await through.aclose()
