"""The names of everything the cluster keeps in Redis, in one place, and the Lua that enqueues work.

Work waits in one Redis stream per (class, appkey), read through the consumer group `workers`:
an entry a worker has read stays in the group's pending list, with its idle time, until the
worker acknowledges it, and that pending list is the lease table (see `workqueue.py`). Which
stream a free worker reads next is kept in a sorted set per class: the appkeys with waiting
work, scored by when each was last served, so the least recently served goes first.
"""

from __future__ import annotations

from ..work.queue import CLASSES as CLASSES  # the classes and kinds of work, named once for both back-ends
from ..work.queue import INVOKE as INVOKE
from ..work.queue import JOB as JOB

PREFIX = "sami:"
GROUP = "workers"


def stream(cls: str, appkey: str) -> str:
    return f"{PREFIX}q:{cls}:{appkey}"


def ready(cls: str) -> str:
    """Sorted set: appkeys that may have waiting work of `cls`, scored by when last served (ms)."""
    return f"{PREFIX}rr:{cls}"


def served(cls: str) -> str:
    """Hash: appkey -> when it was last served (ms), kept when its stream runs empty."""
    return f"{PREFIX}served:{cls}"


STREAMS = PREFIX + "streams"  # set of every work stream, for the lease reaper and the gauges
WORKERS = PREFIX + "workers"  # sorted set: worker name -> its last heartbeat (unix seconds)
WAKE = PREFIX + "wake"  # channel: work was enqueued (idle workers look at once)
JOB_CHANGED = PREFIX + "jobs:changed"  # channel: a job changed (message: its id); SSE, long polls, cancel
CANCEL = PREFIX + "cancel"  # channel: drop this work (message: the work id of an invoke)
JOB_DELETED = PREFIX + "jobs:deleted"  # channel: a job was deleted or expired (message: "<id> <appkey>")
ORPHAN_SWEEP = PREFIX + "orphan-sweep"  # string: the worker that swept the storage's orphans last, until the next turn


def reply(front: str) -> str:
    """Channel on which a front hears that one of its invokes is answered (message: the work id)."""
    return f"{PREFIX}reply:{front}"


def last_take(consumer: str) -> str:
    """Hash: a worker's last take (its token and the entry), given back to a retry when the reply was lost."""
    return f"{PREFIX}take:{consumer}"


def invoke_input(work_id: str) -> str:
    return f"{PREFIX}in:{work_id}"


def invoke_request(work_id: str) -> str:
    return f"{PREFIX}req:{work_id}"


def invoke_output(work_id: str) -> str:
    return f"{PREFIX}out:{work_id}"


# A Lua function that enqueues one piece of work; scripts that must enqueue atomically with their
# own writes (creating a job) start with it. Arguments: class, appkey, kind, id, now in ms.
ENQUEUE_LUA = f"""
local function enqueue(cls, appkey, kind, id, now_ms)
  local key = '{PREFIX}q:' .. cls .. ':' .. appkey
  redis.call('XADD', key, '*', 'kind', kind, 'id', id, 'attempt', '0', 'enqueued', now_ms)
  local last = redis.call('HGET', '{PREFIX}served:' .. cls, appkey) or '0'
  redis.call('ZADD', '{PREFIX}rr:' .. cls, 'NX', last, appkey)
  redis.call('SADD', '{STREAMS}', key)
  redis.call('PUBLISH', '{WAKE}', cls)
end
"""
