"""The shared work queue on a real redis-server: fair across appkeys, interactive first, leases."""

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


async def test_round_robin_across_appkeys_and_interactive_first(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w1", lease=10)
    for n in range(5):
        await queue.enqueue("batch", "big", keys.JOB, f"big-{n}")
    await queue.enqueue("batch", "small", keys.JOB, "small-0")
    await queue.enqueue("interactive", "big", keys.INVOKE, "inv-0")
    order = []
    while (work := await queue.take(keys.CLASSES)) is not None:
        order.append(work.id)
        await queue.done(work)
    # the invoke first; then the backlog's first job and the other appkey's single one, alternately
    assert order == ["inv-0", "big-0", "small-0", "big-1", "big-2", "big-3", "big-4"]
    assert await queue.take(keys.CLASSES) is None


async def test_least_recently_served_goes_first_after_a_return(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w1", lease=10)
    await queue.enqueue("batch", "a", keys.JOB, "a-0")
    taken = await queue.take(["batch"])
    assert taken is not None and taken.id == "a-0"
    await queue.done(taken)
    assert await queue.take(["batch"]) is None  # `a` leaves the ready set, its last service kept
    await queue.enqueue("batch", "b", keys.JOB, "b-0")
    await queue.enqueue("batch", "a", keys.JOB, "a-1")
    await queue.enqueue("batch", "b", keys.JOB, "b-1")
    ids = [(await queue.take(["batch"])).id for _ in range(3)]  # type: ignore[union-attr]
    assert ids == ["b-0", "a-1", "b-1"]  # b was never served: it goes before a


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


async def test_renewing_keeps_the_lease(client: aioredis.Redis) -> None:
    worker, reaper = RedisWorkQueue(client, "w", lease=0.4), RedisWorkQueue(client, "r", lease=0.4)
    await worker.enqueue("interactive", "k", keys.INVOKE, "inv")
    held = await worker.take(["interactive"])
    assert held is not None
    for _ in range(4):
        await asyncio.sleep(0.2)
        assert await worker.renew(held) is True
        assert await reaper.reclaim(3) == ([], [])
    await worker.done(held)
    await asyncio.sleep(0.5)
    assert await reaper.reclaim(3) == ([], [])  # done work is never taken over


async def test_a_lease_taken_over_is_not_renewed(client: aioredis.Redis) -> None:
    """A worker cut off past its lease whose work another worker took over (to fail it: its last
    attempt) learns that renewing: the lease is not taken back from under the new holder."""
    slow, reaper = RedisWorkQueue(client, "slow", lease=0.1), RedisWorkQueue(client, "reaper", lease=0.1)
    await slow.enqueue("batch", "k", keys.JOB, "last-try")
    held = await slow.take(["batch"])
    assert held is not None
    await asyncio.sleep(0.15)
    _, exhausted = await reaper.reclaim(1)
    assert [w.id for w in exhausted] == ["last-try"]  # the reaper holds it now, to fail it
    assert await slow.renew(held) is False
    pending = await client.xpending_range(keys.stream(held.cls, held.appkey), keys.GROUP, "-", "+", 10)
    assert [entry["consumer"] for entry in pending] == [b"reaper"]  # still the reaper's
    await reaper.done(exhausted[0])


async def test_exhausted_after_the_last_attempt(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w", lease=0.1)
    await queue.enqueue("batch", "k", keys.JOB, "doomed")
    outcomes = []
    for _ in range(3):
        assert await queue.take(["batch"]) is not None
        await asyncio.sleep(0.15)
        outcomes.append(await queue.reclaim(3))
    assert [len(r) for r, _ in outcomes] == [1, 1, 0]
    doomed = outcomes[-1][1]
    assert [w.id for w in doomed] == ["doomed"] and doomed[0].attempt == 3
    assert await queue.take(["batch"]) is None
    await asyncio.sleep(0.15)
    assert [w.id for w in (await queue.reclaim(3))[1]] == ["doomed"]  # not failed yet: found again
    await queue.done(doomed[0])
    await asyncio.sleep(0.15)
    assert await queue.reclaim(3) == ([], [])  # failed and acknowledged: gone


async def test_depth_heartbeat_and_workers(client: aioredis.Redis) -> None:
    queue = RedisWorkQueue(client, "w", lease=5)
    for n in range(3):
        await queue.enqueue("batch", f"k{n % 2}", keys.JOB, f"j{n}")
    await queue.enqueue("interactive", "k0", keys.INVOKE, "i0")
    await asyncio.sleep(0.05)
    depth = await queue.depth()
    assert depth["batch"].queued == 3 and depth["interactive"].queued == 1
    assert 0.04 < depth["batch"].oldest_age < 5
    taken = await queue.take(keys.CLASSES)
    assert taken is not None
    depth = await queue.depth()
    assert depth["interactive"].queued == 0 and depth["interactive"].oldest_age == 0
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


async def test_released_work_is_taken_at_once_with_its_attempt_unchanged(client: aioredis.Redis) -> None:
    stopping, other = RedisWorkQueue(client, "stopping", lease=60), RedisWorkQueue(client, "other", lease=60)
    await stopping.enqueue("batch", "k", keys.JOB, "long-job")
    held = await stopping.take(["batch"])
    assert held is not None
    assert await other.take(["batch"]) is None
    assert await stopping.release(held) is True
    again = await other.take(["batch"])
    assert again is not None and (again.id, again.attempt, again.enqueued) == ("long-job", 0, held.enqueued)
    assert await stopping.release(held) is False  # no longer its own
    assert await other.reclaim(3) == ([], [])


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
