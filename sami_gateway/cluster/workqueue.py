"""The work queue of scale-out (`work/queue.py`'s contract): Redis Streams consumer groups, taken
fairly, held under a lease.

Each piece of work is one entry in the stream of its (class, appkey). A worker takes work with
one Lua script that looks at the classes in order (interactive before batch) and, within a
class, at the appkey served least recently, and reads one entry of its stream through the
consumer group: one appkey's backlog of a thousand jobs never makes another appkey's single job
wait behind it, and an invoke never waits behind queued jobs.

An entry read but not yet acknowledged stays in the group's pending list with its idle time;
that list is the lease table. A worker renews the lease of what it runs (XCLAIM to itself resets
the idle time) every quarter lease, and acknowledges and deletes the entry once the work is
done. Every worker also reclaims: entries idle past the lease (their worker was killed, or is
cut off from Redis) are queued again as a new entry, in fairness order, with their attempt
count raised; after the last allowed attempt they come back to the caller to be failed with a
clear error instead. Delivery is therefore at least once, and the work itself is written to be
repeated (results under fixed keys, a job finished once by a compare-and-set).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..work.queue import ClassDepth, Work
from . import keys
from .redis_client import redis_unavailable

RECLAIM_BATCH = 100
CLAIM_MEMORY_MS = 3600 * 1000  # a take whose reply was lost is given back if retried within this
CONSUMER_IDLE_MS = 3600 * 1000  # a consumer holding nothing, unseen this long, is deleted

# A stopping worker's consumer, once it holds nothing (deleting one with pending entries would lose them).
_LEAVE = """
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for j = 1, #consumer, 2 do info[consumer[j]] = consumer[j + 1] end
  if info['name'] == ARGV[2] and tonumber(info['pending']) == 0 then
    return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  end
end
return 0
"""

# The take whose reply was lost (Redis paused, a connection cut) is remembered under the worker's
# token and given back when the worker retries with it: a take that failed on the way back never
# leaves an entry held by nobody, whose lease would lapse and cost the work one of its attempts.
_TAKE = f"""
local group, consumer, now, token, memory = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local claim = KEYS[1]
local last = redis.call('HMGET', claim, 'token', 'cls', 'appkey', 'entry', 'fields')
if last[1] == token then
  local key = '{keys.PREFIX}q:' .. last[2] .. ':' .. last[3]
  local still = redis.pcall('XPENDING', key, group, last[4], last[4], 1, consumer)
  if type(still) == 'table' and not still.err and #still > 0 then
    return {{last[2], last[3], last[4], cjson.decode(last[5])}}
  end
end
for i = 6, #ARGV do
  local cls = ARGV[i]
  local ready = '{keys.PREFIX}rr:' .. cls
  while true do
    local head = redis.call('ZRANGE', ready, 0, 0)
    if #head == 0 then break end
    local appkey = head[1]
    local key = '{keys.PREFIX}q:' .. cls .. ':' .. appkey
    local got = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', key, '>')
    if type(got) == 'table' and got.err then
      redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
      got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', key, '>')
    end
    if got and got[1] and #got[1][2] > 0 then
      local entry = got[1][2][1]
      redis.call('ZADD', ready, now, appkey)
      redis.call('HSET', '{keys.PREFIX}served:' .. cls, appkey, now)
      redis.call('HSET', claim, 'token', token, 'cls', cls, 'appkey', appkey, 'entry', entry[1],
                 'fields', cjson.encode(entry[2]))
      redis.call('PEXPIRE', claim, memory)
      return {{cls, appkey, entry[1], entry[2]}}
    end
    redis.call('ZREM', ready, appkey)
  end
end
return false
"""

# Entries of one stream idle past the lease: each is deleted and, below the attempt limit, added
# again at the tail with its attempt count raised; at the limit it is returned to be failed.
_RECLAIM = keys.ENQUEUE_LUA + f"""
local key, group, consumer, min_idle, max_attempts, now = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local cls, appkey = string.match(key, '^{keys.PREFIX}q:([^:]+):(.*)$')
local ok, claimed = pcall(redis.call, 'XAUTOCLAIM', key, group, consumer, min_idle, '0-0', 'COUNT', {RECLAIM_BATCH})
if not ok then return {{{{}}, {{}}}} end
local requeued, exhausted = {{}}, {{}}
for _, entry in ipairs(claimed[2]) do
  local fields = {{}}
  for j = 1, #entry[2], 2 do fields[entry[2][j]] = entry[2][j + 1] end
  local attempt = tonumber(fields['attempt'] or '0') + 1
  local item = {{fields['kind'], fields['id'], tostring(attempt), fields['enqueued'] or '0', entry[1]}}
  if attempt >= max_attempts then
    table.insert(exhausted, item)  -- held by the caller now, acknowledged once it has failed it
  else
    redis.call('XACK', key, group, entry[1])
    redis.call('XDEL', key, entry[1])
    redis.call('XADD', key, '*', 'kind', fields['kind'], 'id', fields['id'], 'attempt', tostring(attempt),
               'enqueued', fields['enqueued'] or now)
    local last = redis.call('HGET', '{keys.PREFIX}served:' .. cls, appkey) or '0'
    redis.call('ZADD', '{keys.PREFIX}rr:' .. cls, 'NX', last, appkey)
    redis.call('PUBLISH', '{keys.WAKE}', cls)
    table.insert(requeued, item)
  end
end
-- Consumers of workers long gone, holding nothing, are forgotten.
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', key, group)) do
  local info = {{}}
  for j = 1, #consumer, 2 do info[consumer[j]] = consumer[j + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) > {CONSUMER_IDLE_MS} then
    redis.call('XGROUP', 'DELCONSUMER', key, group, info['name'])
  end
end
return {{requeued, exhausted}}
"""

# Held work's lease reset (XCLAIM to its holder resets the idle time), only while this consumer
# still holds it: never taken back from a worker that took it over after the lease lapsed.
_RENEW = """
local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if type(held) ~= 'table' or held.err or #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

_ENQUEUE = keys.ENQUEUE_LUA + "enqueue(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])\nreturn 1\n"

# Held work handed back (a worker stopping): at the tail of its stream again, its attempt count
# unchanged (this run was not cut short by a failure), for any worker to take at once.
_RELEASE = f"""
local key, group, entry, cls, appkey = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('XACK', key, group, entry) == 0 then return 0 end
redis.call('XDEL', key, entry)
redis.call('XADD', key, '*', 'kind', ARGV[5], 'id', ARGV[6], 'attempt', ARGV[7], 'enqueued', ARGV[8])
local last = redis.call('HGET', '{keys.PREFIX}served:' .. cls, appkey) or '0'
redis.call('ZADD', '{keys.PREFIX}rr:' .. cls, 'NX', last, appkey)
redis.call('PUBLISH', '{keys.WAKE}', cls)
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_ms() -> str:
    return str(int(time.time() * 1000))


class RedisWorkQueue:
    """`WorkQueue` (`work/queue.py`) on Redis Streams, as consumer `name` of the group."""

    def __init__(self, client: aioredis.Redis, name: str, lease: float) -> None:
        self._client = client
        self.name = name
        self.lease = lease
        self._take = client.register_script(_TAKE)
        self._reclaim = client.register_script(_RECLAIM)
        self._enqueue = client.register_script(_ENQUEUE)
        self._release = client.register_script(_RELEASE)
        self._leave = client.register_script(_LEAVE)
        self._renew = client.register_script(_RENEW)
        self._token: str | None = None  # names the take in flight, until one returns

    async def enqueue(self, cls: str, appkey: str, kind: str, work_id: str) -> None:
        with redis_unavailable():
            await self._enqueue(args=[cls, appkey, kind, work_id, _now_ms()])

    async def take(self, classes: Sequence[str]) -> Work | None:
        """The next work of the first class in `classes` that has any, fairly across appkeys. After a
        take that failed (a Redis error), the next one first gets back what that one took, if it did."""
        if not classes:
            return None
        if self._token is None:  # kept after a failed take: its retry gets what that one took, if anything
            self._token = uuid.uuid4().hex
        with redis_unavailable():
            got = await self._take(keys=[keys.last_take(self.name)],
                                   args=[keys.GROUP, self.name, _now_ms(), self._token, CLAIM_MEMORY_MS, *classes])
        self._token = None
        if not got:
            return None
        cls, appkey, entry, flat = _text(got[0]), _text(got[1]), _text(got[2]), got[3]
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Work(cls, appkey, fields["kind"], fields["id"], int(fields.get("attempt", "0")),
                    int(fields.get("enqueued", "0")) / 1000, entry)

    async def renew(self, work: Work) -> bool:
        """Reset the lease of held work; False once it is no longer ours (requeued, or taken over)."""
        with redis_unavailable():
            return bool(await self._renew(keys=[keys.stream(work.cls, work.appkey)],
                                          args=[keys.GROUP, self.name, work.entry]))

    async def done(self, work: Work) -> None:
        """The work is finished (or abandoned): acknowledge and delete its entry."""
        with redis_unavailable():
            async with self._client.pipeline(transaction=True) as pipe:
                stream = keys.stream(work.cls, work.appkey)
                pipe.xack(stream, keys.GROUP, work.entry)
                pipe.xdel(stream, work.entry)
                await pipe.execute()

    async def release(self, work: Work) -> bool:
        """Hand held work back to the queue now (a worker stopping before it finished); False if it
        was no longer ours."""
        with redis_unavailable():
            done = await self._release(keys=[keys.stream(work.cls, work.appkey)], args=[
                keys.GROUP, work.entry, work.cls, work.appkey, work.kind, work.id, str(work.attempt),
                str(int(work.enqueued * 1000))])
        return bool(done)

    async def reclaim(self, max_attempts: int) -> tuple[list[Work], list[Work]]:
        """Queue again the work whose lease lapsed: (requeued, exhausted). The exhausted are now held
        by this consumer: the caller fails them, then calls `done`."""
        requeued: list[Work] = []
        exhausted: list[Work] = []
        min_idle = str(int(self.lease * 1000))
        with redis_unavailable():
            streams = [_text(name) for name in await self._client.smembers(keys.STREAMS)]
            for stream in streams:
                cls, appkey = stream[len(keys.PREFIX) + 2:].split(":", 1)
                back, out = await self._reclaim(keys=[stream], args=[keys.GROUP, self.name, min_idle,
                                                                     max_attempts, _now_ms()])
                for items, into in ((back, requeued), (out, exhausted)):
                    for kind, work_id, attempt, enqueued, entry in items:
                        into.append(Work(cls, appkey, _text(kind), _text(work_id), int(attempt),
                                         int(enqueued) / 1000, _text(entry)))
        return requeued, exhausted

    # -- liveness and depth ------------------------------------------------------------------

    async def heartbeat(self) -> None:
        with redis_unavailable():
            await self._client.zadd(keys.WORKERS, {self.name: time.time()})

    async def leave(self) -> None:
        """This consumer is going: out of the live workers, and out of every group it holds nothing in."""
        with redis_unavailable():
            await self._client.zrem(keys.WORKERS, self.name)
            await self._client.delete(keys.last_take(self.name))
            for stream in await self._client.smembers(keys.STREAMS):
                with contextlib.suppress(ResponseError):  # a stream without its group yet
                    await self._leave(keys=[_text(stream)], args=[keys.GROUP, self.name])

    async def workers_alive(self) -> int:
        """Workers whose heartbeat is younger than a lease (stale entries are dropped)."""
        with redis_unavailable():
            cutoff = time.time() - self.lease
            await self._client.zremrangebyscore(keys.WORKERS, "-inf", cutoff - 3600)
            return int(await self._client.zcount(keys.WORKERS, cutoff, "+inf"))

    async def depth(self) -> dict[str, ClassDepth]:
        """Per class: entries waiting to be taken, and the age of the oldest."""
        queued = dict.fromkeys(keys.CLASSES, 0)
        oldest: dict[str, float] = {}
        now = time.time()
        with redis_unavailable():
            for name in await self._client.smembers(keys.STREAMS):
                stream = _text(name)
                cls = stream[len(keys.PREFIX) + 2:].split(":", 1)[0]
                waiting, first = await self._waiting(stream)
                queued[cls] = queued.get(cls, 0) + waiting
                if first is not None:
                    oldest[cls] = min(oldest.get(cls, now), first)
        return {cls: ClassDepth(queued[cls], max(0.0, now - oldest[cls]) if cls in oldest else 0.0)
                for cls in queued}

    async def _waiting(self, stream: str) -> tuple[int, float | None]:
        """Entries of `stream` not yet delivered, and when the first of them was added."""
        length = int(await self._client.xlen(stream))
        if length == 0:
            return 0, None
        try:
            groups = await self._client.xinfo_groups(stream)
        except Exception:  # noqa: BLE001 - no group yet: nothing was ever taken
            groups = []
        group = next((g for g in groups if _text(g.get("name", b"")) == keys.GROUP), None)
        if group is None:
            first = await self._client.xrange(stream, count=1)
            return length, int(_text(first[0][0]).split("-")[0]) / 1000 if first else None
        pending, last = int(group.get("pending", 0)), _text(group.get("last-delivered-id", "0-0"))
        after = await self._client.xrange(stream, min="(" + last, count=1)
        first_at = int(_text(after[0][0]).split("-")[0]) / 1000 if after else None
        return max(0, length - pending), first_at
