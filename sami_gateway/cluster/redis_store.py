"""The shared job store: jobs, uploads and webhook events in Redis, each change one Lua script.

Every front and worker reads and writes the same keys; a change that touches several keys is one
script, so nobody sees half of it. Creating a job also enqueues its work in the same script: a job
that exists is in the queue, whatever happens to the front afterwards. Key layout, under `PREFIX`:

    job:{id}                          hash: data (the job as JSON), status, progress, seq, appkey, created_at,
                                      fingerprint (of the request, with an Idempotency-Key), bytes (what it
                                      keeps: its input and results)
    jobs                              set: every job id
    jobs:seq                          counter: the last seq handed out
    jobs:by-appkey:{appkey}           sorted set: the appkey's job ids by seq
    jobs:by-status:{status}:{appkey}  sorted set: its job ids of one status by seq (`queued`: its queue)
    jobs:queued-appkeys               set: the appkeys with queued jobs
    jobs:queued-since                 sorted set: queued job ids by created_at
    jobs:expiry                       sorted set: job ids by expires_at (ended jobs)
    idem:{appkey}:{sha256 of the key} string: the job an Idempotency-Key named, for a day
    upload:{id}                       hash: data (JSON), completed ('' until PUT, then '1'), appkey, size
    uploads:expiry                    sorted set: upload ids by expires_at
    uploads:by-appkey:{appkey}        set: the appkey's upload ids
    storage:bytes                     hash: appkey -> the bytes of its jobs and PUT uploads (its storage quota)
    event:{id}                        hash: meta (JSON, all but the body), body, done ('1' once delivered
                                      or abandoned)
    events:due                        sorted set: pending event ids by next attempt (or end of a claim)
    job-events:{job_id}               set: the job's event ids
    deleted:{id}                      string: the job was deleted (not lost with Redis's state), for an hour
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import orjson
import redis.asyncio as aioredis

from ..jobs.codec import event_from_meta, event_meta, job_from_dict, job_to_dict, upload_from_dict, upload_to_dict
from ..jobs.model import Job, JobStatus, Upload, WebhookEvent
from ..jobs.storage_quota import StorageLimits, StorageQuotaExceeded, StorageUsage
from ..jobs.store import IdempotencyMismatch, QueueHead
from .keys import ENQUEUE_LUA, JOB_CHANGED, JOB_DELETED, PREFIX
from .redis_client import redis_unavailable

P = ParamSpec("P")
T = TypeVar("T")

IDEMPOTENCY_TTL = 24 * 3600  # seconds an Idempotency-Key names its job, as the contract says
DELETED_TTL = 3600  # seconds a deleted job is known as deleted: a stream open on it says cancelled, not lost
JOBS, SEQ = PREFIX + "jobs", PREFIX + "jobs:seq"
QUEUED_APPKEYS, QUEUED_SINCE, EXPIRY = PREFIX + "jobs:queued-appkeys", PREFIX + "jobs:queued-since", \
    PREFIX + "jobs:expiry"
UPLOAD_EXPIRY, EVENTS_DUE = PREFIX + "uploads:expiry", PREFIX + "events:due"
STORED_BYTES = PREFIX + "storage:bytes"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def by_appkey(appkey: str) -> str:
    return f"{PREFIX}jobs:by-appkey:{appkey}"


def by_status(status: JobStatus, appkey: str) -> str:
    return f"{PREFIX}jobs:by-status:{status.value}:{appkey}"


def idempotency_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def idempotency(appkey: str, key: str) -> str:
    return f"{PREFIX}idem:{appkey}:{idempotency_digest(key)}"


def upload_key(upload_id: str) -> str:
    return f"{PREFIX}upload:{upload_id}"


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def job_events(job_id: str) -> str:
    return f"{PREFIX}job-events:{job_id}"


def deleted_key(job_id: str) -> str:
    return f"{PREFIX}deleted:{job_id}"


# The same names in Lua, and the helpers the scripts share: `load` gives what `_job` decodes.
LAYOUT_LUA = f"""
local P, CHANGED, DELETED = '{PREFIX}', '{JOB_CHANGED}', '{JOB_DELETED}'
local JOBS, SEQ, QUEUED_APPKEYS, QUEUED_SINCE = '{JOBS}', '{SEQ}', '{QUEUED_APPKEYS}', '{QUEUED_SINCE}'
local EXPIRY, UPLOAD_EXPIRY, EVENTS_DUE, STORED_BYTES = '{EXPIRY}', '{UPLOAD_EXPIRY}', '{EVENTS_DUE}', '{STORED_BYTES}'
local function job_key(id) return P .. 'job:' .. id end
local function by_appkey(appkey) return P .. 'jobs:by-appkey:' .. appkey end
local function by_status(status, appkey) return P .. 'jobs:by-status:' .. status .. ':' .. appkey end
local function upload_key(id) return P .. 'upload:' .. id end
local function uploads_of(appkey) return P .. 'uploads:by-appkey:' .. appkey end
local function event_key(id) return P .. 'event:' .. id end
local function job_events(id) return P .. 'job-events:' .. id end
""" + """
local function load(id)
  local job = redis.call('HMGET', job_key(id), 'data', 'status', 'progress', 'seq', 'appkey', 'ready')
  if job[1] then return job end
  return nil
end
local function loaded(ids)
  local out = {}
  for _, id in ipairs(ids) do
    local job = load(id)
    if job then out[#out + 1] = job end
  end
  return out
end
-- move job `id` from the indexes of status `old` (false: a new job) to those of `new`
local function reindex(appkey, id, seq, old, new, created)
  if old ~= new then
    if old then redis.call('ZREM', by_status(old, appkey), id) end
    redis.call('ZADD', by_status(new, appkey), seq, id)
  end
  if new == 'queued' then
    redis.call('ZADD', QUEUED_SINCE, created, id)
    redis.call('SADD', QUEUED_APPKEYS, appkey)
  elseif old == 'queued' then
    redis.call('ZREM', QUEUED_SINCE, id)
    if redis.call('ZCARD', by_status('queued', appkey)) == 0 then redis.call('SREM', QUEUED_APPKEYS, appkey) end
  end
end
-- a whole number as Redis takes it (Lua would write a large one with an exponent)
local function int(x) return string.format('%d', x) end
-- add `delta` to the bytes the appkey holds (an appkey holding none has no field)
local function charge(appkey, delta)
  if redis.call('HINCRBY', STORED_BYTES, appkey, int(delta)) == 0 then redis.call('HDEL', STORED_BYTES, appkey) end
end
-- what the appkey holds: bytes, uploads, jobs
local function held(appkey)
  return tonumber(redis.call('HGET', STORED_BYTES, appkey) or '0'), redis.call('SCARD', uploads_of(appkey)),
         redis.call('ZCARD', by_appkey(appkey))
end
-- false when adding (bytes, uploads, jobs) fits the appkey's limits ({bytes, uploads, jobs}, '' for none),
-- else {what, held, limit, adding}; whatever is added counts as one byte at least (jobs/storage_quota.py)
local function refusal(appkey, bytes, uploads, jobs, limits)
  if limits[1] == '' then return false end
  local b, u, j = held(appkey)
  local most = {tonumber(limits[1]), tonumber(limits[2]), tonumber(limits[3])}
  if b + math.max(bytes, 1) > most[1] then return {'bytes', b, most[1], bytes} end
  if uploads > 0 and u + uploads > most[2] then return {'uploads', u, most[2], uploads} end
  if jobs > 0 and j + jobs > most[3] then return {'jobs', j, most[3], jobs} end
  return false
end
local function put_event(id, job_id, meta, body, pending, next_at)
  redis.call('HSET', event_key(id), 'meta', meta, 'body', body, 'done', pending == '1' and '' or '1')
  redis.call('SADD', job_events(job_id), id)
  if pending == '1' then redis.call('ZADD', EVENTS_DUE, next_at, id) end
end
"""

# ARGV: appkey, id, sha256 of the idempotency key or '', since, data, status, progress, created_at,
# now in ms, idempotency ttl, the request's fingerprint, the job's bytes, the appkey's limits (3, or '').
# Returns {1, seq} for a new job, {0, job} for the one the key named, {2, job} for that one when it was
# made from another request, {3, refusal} when the new job does not fit the limits.
CREATE_LUA = ENQUEUE_LUA + LAYOUT_LUA + """
local appkey, id, digest, since = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local idem = P .. 'idem:' .. appkey .. ':' .. digest
if digest ~= '' then
  local first = redis.call('GET', idem)
  local job = first and load(first)
  if job and tonumber(redis.call('HGET', job_key(first), 'created_at')) >= since then
    local known = redis.call('HGET', job_key(first), 'fingerprint')
    if known and known ~= '' and known ~= ARGV[11] then return {2, job} end
    return {0, job}
  end
end
local refused = refusal(appkey, tonumber(ARGV[12]), 0, 1, {ARGV[13], ARGV[14], ARGV[15]})
if refused then return {3, refused} end
local seq = redis.call('INCR', SEQ)
redis.call('HSET', job_key(id), 'data', ARGV[5], 'status', ARGV[6], 'progress', ARGV[7], 'seq', seq,
           'appkey', appkey, 'created_at', ARGV[8], 'fingerprint', digest ~= '' and ARGV[11] or '', 'bytes', ARGV[12])
charge(appkey, tonumber(ARGV[12]))
redis.call('SADD', JOBS, id)
redis.call('ZADD', by_appkey(appkey), seq, id)
reindex(appkey, id, seq, false, ARGV[6], ARGV[8])
if digest ~= '' then redis.call('SET', idem, id, 'EX', ARGV[10]) end
enqueue('batch', appkey, 'job', id, ARGV[9])
redis.call('PUBLISH', CHANGED, id)
return {1, seq}
"""

# ARGV: id, data, status, progress, created_at, expires_at or '', bytes, n, n statuses it may come
# from, then the event if any: id, job id, meta, body, pending ('1' or ''), next attempt.
TRANSITION_LUA = LAYOUT_LUA + """
local id, status, created, n = ARGV[1], ARGV[3], ARGV[5], tonumber(ARGV[8])
local key = job_key(id)
local current = redis.call('HGET', key, 'status')
local allowed = false
for i = 9, 8 + n do allowed = allowed or ARGV[i] == current end
if not allowed then return 0 end
local job = redis.call('HMGET', key, 'appkey', 'seq', 'bytes')
redis.call('HSET', key, 'data', ARGV[2], 'status', status, 'progress', ARGV[4], 'created_at', created,
           'bytes', ARGV[7])
redis.call('HDEL', key, 'ready')  -- the stems' seconds are a run's: each run reports its own
charge(job[1], tonumber(ARGV[7]) - tonumber(job[3] or '0'))
reindex(job[1], id, job[2], current, status, created)
if ARGV[6] == '' then redis.call('ZREM', EXPIRY, id) else redis.call('ZADD', EXPIRY, ARGV[6], id) end
local e = 9 + n
if ARGV[e] then put_event(ARGV[e], ARGV[e + 1], ARGV[e + 2], ARGV[e + 3], ARGV[e + 4], ARGV[e + 5]) end
redis.call('PUBLISH', CHANGED, id)
return 1
"""

PROGRESS_LUA = LAYOUT_LUA + """
local key = job_key(ARGV[1])
local job = redis.call('HMGET', key, 'status', 'progress')
if job[1] ~= 'processing' or tonumber(job[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', key, 'progress', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', key, 'ready', ARGV[3]) end
redis.call('PUBLISH', CHANGED, ARGV[1])
return 1
"""

# ARGV: appkey, limit, before seq or '', the statuses (none: all)
LIST_LUA = LAYOUT_LUA + """
local appkey, limit, before = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local max = before == '' and '+inf' or '(' .. before
local sources = {}
if #ARGV == 3 then sources[1] = by_appkey(appkey) end
for i = 4, #ARGV do sources[#sources + 1] = by_status(ARGV[i], appkey) end
local picked = {}
for _, source in ipairs(sources) do
  local found = redis.call('ZREVRANGEBYSCORE', source, max, '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #found, 2 do picked[#picked + 1] = {tonumber(found[i + 1]), found[i]} end
end
table.sort(picked, function(a, b) return a[1] > b[1] end)
local ids = {}
for i = 1, math.min(limit, #picked) do ids[i] = picked[i][2] end
return loaded(ids)
"""

HEADS_LUA = LAYOUT_LUA + """
local out = {}
for _, appkey in ipairs(redis.call('SMEMBERS', QUEUED_APPKEYS)) do
  local queue = by_status('queued', appkey)
  local head = redis.call('ZRANGE', queue, 0, 0, 'WITHSCORES')
  if head[1] then
    out[#out + 1] = {appkey, head[1], head[2], redis.call('HGET', job_key(head[1]), 'created_at'),
                     redis.call('ZCARD', queue)}
  end
end
return out
"""

EXPIRED_JOBS_LUA = LAYOUT_LUA + """
return loaded(redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2]))
"""

DELETE_JOB_LUA = LAYOUT_LUA + """
local id = ARGV[1]
local job = redis.call('HMGET', job_key(id), 'appkey', 'status', 'bytes')
for _, event in ipairs(redis.call('SMEMBERS', job_events(id))) do
  redis.call('DEL', event_key(event))
  redis.call('ZREM', EVENTS_DUE, event)
end
redis.call('DEL', job_events(id))
if not job[1] then return 0 end
local appkey, status = job[1], job[2]
charge(appkey, -tonumber(job[3] or '0'))
redis.call('DEL', job_key(id))
redis.call('SET', P .. 'deleted:' .. id, '1', 'EX', ARGV[2])
redis.call('SREM', JOBS, id)
redis.call('ZREM', by_appkey(appkey), id)
redis.call('ZREM', by_status(status, appkey), id)
redis.call('ZREM', EXPIRY, id)
redis.call('ZREM', QUEUED_SINCE, id)
if redis.call('ZCARD', by_status('queued', appkey)) == 0 then redis.call('SREM', QUEUED_APPKEYS, appkey) end
redis.call('PUBLISH', CHANGED, id)
redis.call('PUBLISH', DELETED, id .. ' ' .. appkey)
return 1
"""

# ARGV: id, data, completed ('' or '1'), expires_at, 'create' or 'complete' (only if not completed yet),
# appkey, size, the appkey's limits (3, or ''). Returns 1, 0 (completed already), or a refusal.
PUT_UPLOAD_LUA = LAYOUT_LUA + """
local key, appkey, size = upload_key(ARGV[1]), ARGV[6], tonumber(ARGV[7])
local limits = {ARGV[8], ARGV[9], ARGV[10]}
if ARGV[5] == 'complete' then
  if redis.call('HGET', key, 'completed') ~= '' then return 0 end
  local refused = refusal(appkey, size, 0, 0, limits)
  if refused then return refused end
  charge(appkey, size)
else
  local refused = refusal(appkey, 0, 1, 0, limits)
  if refused then return refused end
  redis.call('SADD', uploads_of(appkey), ARGV[1])
end
redis.call('HSET', key, 'data', ARGV[2], 'completed', ARGV[3], 'appkey', appkey, 'size', ARGV[7])
redis.call('ZADD', UPLOAD_EXPIRY, ARGV[4], ARGV[1])
return 1
"""

USAGE_LUA = LAYOUT_LUA + """
return {held(ARGV[1])}
"""

EXPIRED_UPLOADS_LUA = LAYOUT_LUA + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', UPLOAD_EXPIRY, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local data = redis.call('HGET', upload_key(id), 'data')
  if data then out[#out + 1] = data end
end
return out
"""

DELETE_UPLOAD_LUA = LAYOUT_LUA + """
local upload = redis.call('HMGET', upload_key(ARGV[1]), 'appkey', 'size', 'completed')
if upload[1] then
  redis.call('SREM', uploads_of(upload[1]), ARGV[1])
  if upload[3] == '1' then charge(upload[1], -tonumber(upload[2] or '0')) end
end
redis.call('DEL', upload_key(ARGV[1]))
redis.call('ZREM', UPLOAD_EXPIRY, ARGV[1])
"""

# ARGV: now, limit, claimed until. Each event returned is claimed: due again only when the claim
# ends, so no other sender takes it meanwhile.
# ARGV: now, limit, claimed until, the call's token, how long it is remembered (ms). The events a call
# claimed are remembered under its token: when its answer was lost (Redis paused or cut off), the
# sender's next call, sent with the same token, gets them instead of nothing until the claim runs out.
DUE_LUA = LAYOUT_LUA + """
local memo = P .. 'events:claim:' .. ARGV[4]
local out, ids = {}, {}
local again = redis.call('GET', memo)
if again then
  for id in string.gmatch(again, '%S+') do
    local event = redis.call('HMGET', event_key(id), 'meta', 'body', 'done')
    if event[1] and event[3] == '' and redis.call('ZSCORE', EVENTS_DUE, id) then
      redis.call('ZADD', EVENTS_DUE, ARGV[3], id)
      out[#out + 1] = {event[1], event[2]}
    end
  end
  return out
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', EVENTS_DUE, '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local event = redis.call('HMGET', event_key(id), 'meta', 'body')
  if event[1] then
    redis.call('ZADD', EVENTS_DUE, ARGV[3], id)
    out[#out + 1] = event
    ids[#ids + 1] = id
  else
    redis.call('ZREM', EVENTS_DUE, id)
  end
end
if #ids > 0 then redis.call('SET', memo, table.concat(ids, ' '), 'PX', ARGV[5]) end
return out
"""

# ARGV: id, meta, pending ('1' or ''), next attempt. An event delivered or abandoned stays so.
ATTEMPTED_LUA = LAYOUT_LUA + """
local key = event_key(ARGV[1])
local done = redis.call('HGET', key, 'done')
if done ~= '' then return 0 end
redis.call('HSET', key, 'meta', ARGV[2], 'done', ARGV[3] == '1' and '' or '1')
if ARGV[3] == '1' then redis.call('ZADD', EVENTS_DUE, ARGV[4], ARGV[1]) else redis.call('ZREM', EVENTS_DUE, ARGV[1]) end
return 1
"""

EVENTS_OF_LUA = LAYOUT_LUA + """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', job_events(ARGV[1]))) do
  local event = redis.call('HMGET', event_key(id), 'meta', 'body')
  if event[1] then out[#out + 1] = event end
end
return out
"""


def _unavailable_as_503(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis unreachable or too slow during `method`: the 503 of `redis_unavailable`."""
    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        with redis_unavailable():
            return await method(*args, **kwargs)
    return guarded


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(value: float | None) -> float | str:
    return "" if value is None else value


def _job(fields: Sequence[Any]) -> Job:
    """A job from what the Lua `load` returns: the stored fields override the JSON's."""
    data, status, progress, seq, appkey, ready = (*fields, None)[:6]
    values = orjson.loads(data)
    values.update(status=_text(status), progress=float(progress), seq=int(seq), appkey=_text(appkey),
                  ready=orjson.loads(ready) if ready else None)
    return job_from_dict(values)


def _pending(event: WebhookEvent) -> str:
    """'1' while the event is still to be delivered, '' once delivered or abandoned (Lua's flag)."""
    return "1" if event.delivered_at is None and event.abandoned_at is None else ""


def _event_args(event: WebhookEvent) -> list[str | bytes | float]:
    return [event.id, event.job_id, orjson.dumps(event_meta(event)), event.body, _pending(event),
            event.next_attempt_at]


def _limits(limits: StorageLimits | None) -> list[int | str]:
    """An appkey's limits as the scripts take them: bytes, uploads, jobs ('' each for none)."""
    return ["", "", ""] if limits is None else [limits.stored_bytes, limits.uploads, limits.jobs]


def _refusal(fields: Sequence[Any]) -> StorageQuotaExceeded:
    """The error of a script's refusal: {what, held, limit, adding}."""
    what, held, limit, adding = fields
    return StorageQuotaExceeded(_text(what), int(held), int(limit), int(adding))


def _event(fields: Sequence[Any]) -> WebhookEvent:
    meta, body = fields
    return event_from_meta(orjson.loads(meta), body)


class RedisJobStore:
    """`JobStore` in Redis, shared by every front and worker; `client` stays open on `close`."""

    def __init__(self, client: aioredis.Redis, event_claim_seconds: float = 120.0) -> None:
        self._client = client
        self._claim = event_claim_seconds  # how long a sender owns the events it took
        self._due_token: str | None = None  # the token of a call for due events that failed, for the next
        script = client.register_script
        self._create, self._transition, self._progress = script(CREATE_LUA), script(TRANSITION_LUA), \
            script(PROGRESS_LUA)
        self._list, self._heads, self._expired_jobs = script(LIST_LUA), script(HEADS_LUA), script(EXPIRED_JOBS_LUA)
        self._delete_job, self._put_upload = script(DELETE_JOB_LUA), script(PUT_UPLOAD_LUA)
        self._expired_uploads, self._delete_upload = script(EXPIRED_UPLOADS_LUA), script(DELETE_UPLOAD_LUA)
        self._due, self._attempted, self._events_of = script(DUE_LUA), script(ATTEMPTED_LUA), \
            script(EVENTS_OF_LUA)
        self._usage = script(USAGE_LUA)

    @_unavailable_as_503
    async def open(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        """Nothing to release: the client is shared and closed by whoever made it."""

    # -- jobs --------------------------------------------------------------------------------

    @_unavailable_as_503
    async def create_job(self, job: Job, idempotency_key: str | None = None, idempotency_since: float = 0.0,
                         fingerprint: str = "", limits: StorageLimits | None = None) -> tuple[Job, bool]:
        """Store the job and enqueue its work in one step (see the `JobStore` protocol)."""
        digest = "" if idempotency_key is None else idempotency_digest(idempotency_key)
        outcome, value = await self._create(args=[
            job.appkey, job.id, digest, idempotency_since, orjson.dumps(job_to_dict(job)), job.status.value,
            job.progress, job.created_at, int(time.time() * 1000), IDEMPOTENCY_TTL, fingerprint, job.stored_bytes,
            *_limits(limits)])
        if outcome == 3:
            raise _refusal(value)
        if outcome == 2:
            raise IdempotencyMismatch(f"Idempotency-Key was used for job {_job(value).id} with a different request")
        return (job.with_(seq=int(value)), True) if outcome == 1 else (_job(value), False)

    @_unavailable_as_503
    async def get_job(self, job_id: str) -> Job | None:
        fields = await self._client.hmget(job_key(job_id), ["data", "status", "progress", "seq", "appkey", "ready"])
        return None if fields[0] is None else _job(fields)

    @_unavailable_as_503
    async def list_jobs(self, appkey: str, statuses: Collection[JobStatus], limit: int,
                        before_seq: int | None = None) -> list[Job]:
        if limit <= 0:
            return []
        wanted = sorted({status.value for status in statuses})
        found = await self._list(args=[appkey, limit, "" if before_seq is None else before_seq, *wanted])
        return [_job(fields) for fields in found]

    @_unavailable_as_503
    async def queue_heads(self) -> list[QueueHead]:
        heads = [QueueHead(_text(appkey), _text(job_id), int(seq), float(created), int(queued))
                 for appkey, job_id, seq, created, queued in await self._heads()]
        return sorted(heads, key=lambda head: head.seq)

    @_unavailable_as_503
    async def oldest_queued(self) -> float | None:
        oldest = await self._client.zrange(QUEUED_SINCE, 0, 0, withscores=True)
        return float(oldest[0][1]) if oldest else None

    @_unavailable_as_503
    async def transition(self, job: Job, from_statuses: Collection[JobStatus],
                         event: WebhookEvent | None = None) -> bool:
        """Write the job if its status is one of `from_statuses`, with its event, and announce it on
        `JOB_CHANGED`. From `processing` to `processing` works: a worker taking over lapsed work."""
        sources = sorted({status.value for status in from_statuses})
        args: list[Any] = [job.id, orjson.dumps(job_to_dict(job.with_(ready=None))), job.status.value, job.progress,
                           job.created_at,
                           _optional(job.expires_at), job.stored_bytes, len(sources), *sources]
        if event is not None:
            args += _event_args(event)
        return bool(await self._transition(args=args))

    @_unavailable_as_503
    async def set_progress(self, job_id: str, progress: float, ready: Mapping[str, float] | None = None) -> None:
        await self._progress(args=[job_id, progress, "" if ready is None else orjson.dumps(dict(ready))])

    @_unavailable_as_503
    async def delete_job(self, job_id: str) -> None:
        await self._delete_job(args=[job_id, DELETED_TTL])

    @_unavailable_as_503
    async def was_deleted(self, job_id: str) -> bool:
        return bool(await self._client.exists(deleted_key(job_id)))

    @_unavailable_as_503
    async def expired_jobs(self, now: float, limit: int) -> list[Job]:
        return [_job(fields) for fields in await self._expired_jobs(args=[now, limit])]

    @_unavailable_as_503
    async def job_ids(self) -> set[str]:
        return {_text(job_id) for job_id in await self._client.smembers(JOBS)}

    @_unavailable_as_503
    async def usage(self, appkey: str) -> StorageUsage:
        stored_bytes, uploads, jobs = await self._usage(args=[appkey])
        return StorageUsage(int(stored_bytes), int(uploads), int(jobs))

    # -- uploads -----------------------------------------------------------------------------

    async def _write_upload(self, upload: Upload, mode: str, limits: StorageLimits | None) -> bool:
        done = await self._put_upload(args=[upload.id, orjson.dumps(upload_to_dict(upload)),
                                            "" if upload.completed_at is None else "1", upload.expires_at, mode,
                                            upload.appkey, upload.size, *_limits(limits)])
        if isinstance(done, list):
            raise _refusal(done)
        return bool(done)

    @_unavailable_as_503
    async def create_upload(self, upload: Upload, limits: StorageLimits | None = None) -> None:
        await self._write_upload(upload, "create", limits)

    @_unavailable_as_503
    async def get_upload(self, upload_id: str) -> Upload | None:
        data = await self._client.hget(upload_key(upload_id), "data")
        return None if data is None else upload_from_dict(orjson.loads(data))

    @_unavailable_as_503
    async def complete_upload(self, upload: Upload, limits: StorageLimits | None = None) -> bool:
        return await self._write_upload(upload, "complete", limits)

    @_unavailable_as_503
    async def expired_uploads(self, now: float, limit: int) -> list[Upload]:
        return [upload_from_dict(orjson.loads(data)) for data in await self._expired_uploads(args=[now, limit])]

    @_unavailable_as_503
    async def delete_upload(self, upload_id: str) -> None:
        await self._delete_upload(args=[upload_id])

    @_unavailable_as_503
    async def upload_ids(self) -> set[str]:
        return {_text(upload_id) for upload_id in await self._client.zrange(UPLOAD_EXPIRY, 0, -1)}

    # -- webhook events ----------------------------------------------------------------------

    @_unavailable_as_503
    async def due_events(self, now: float, limit: int) -> list[WebhookEvent]:
        """Pending events due by `now`, oldest first, each claimed for `event_claim_seconds`: no other
        sender gets it until `event_attempted` records the attempt (or the claim runs out). After a call
        that failed, the next one gets what that one claimed, if it ran."""
        token, self._due_token = self._due_token or uuid.uuid4().hex, None
        try:
            claimed = await self._due(args=[now, limit, now + self._claim, token, math.ceil(self._claim * 1000)])
        except BaseException:
            self._due_token = token
            raise
        return [_event(fields) for fields in claimed]

    @_unavailable_as_503
    async def next_event_at(self) -> float | None:
        first = await self._client.zrange(EVENTS_DUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    @_unavailable_as_503
    async def event_attempted(self, event: WebhookEvent) -> None:
        await self._attempted(args=[event.id, orjson.dumps(event_meta(event)), _pending(event),
                                    event.next_attempt_at])

    @_unavailable_as_503
    async def events_of(self, job_id: str) -> list[WebhookEvent]:
        """Every event of a job, delivered or not (tests and diagnostics)."""
        events = [_event(fields) for fields in await self._events_of(args=[job_id])]
        return sorted(events, key=lambda event: event.created_at)
