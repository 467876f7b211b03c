"""The Redis job store against a real redis-server: the `JobStore` contract, side by side with
SQLite, then what only a shared store must do (the queue entry, several fronts, claims, pub/sub,
an unreachable Redis)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sami_gateway.cluster import keys
from sami_gateway.cluster.redis_client import redis_client
from sami_gateway.cluster.redis_store import DELETED_TTL, RedisJobStore, deleted_key
from sami_gateway.errors import Code, GatewayError
from sami_gateway.jobs.local.sqlite_store import SqliteJobStore
from sami_gateway.jobs.model import InputKind, Job, JobError, JobStatus, StoredResult, Upload, WebhookEvent
from sami_gateway.jobs.storage_quota import StorageLimits, StorageQuotaExceeded, StorageUsage
from sami_gateway.jobs.store import IdempotencyMismatch
from tests.servers import Server

QUEUED, PROCESSING, SUCCEEDED, FAILED = JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.SUCCEEDED, JobStatus.FAILED
ACTIVE = {QUEUED, PROCESSING}
Store = SqliteJobStore | RedisJobStore


@pytest.fixture
async def client(redis: Server) -> AsyncIterator[Redis]:
    client = redis_client(redis.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, redis: Server) -> AsyncIterator[Store]:
    """Each contract test runs on both stores: they must behave the same."""
    client = None
    if request.param == "sqlite":
        store: Store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    else:
        client = redis_client(redis.url)
        await client.flushdb()
        store = RedisJobStore(client)
    await store.open()
    yield store
    await store.close()
    if client is not None:
        await client.aclose()


def new_job(appkey: str = "a", **changes: Any) -> Job:
    job = Job(id=f"job_{secrets.token_hex(6)}", appkey=appkey, status=QUEUED,
              request={"model": "htdemucs", "stems": ["vocals", "no_vocals"], "output": {"format": "wav"}},
              input_kind=InputKind.URL, input_ref="https://example.com/song.mp3", created_at=time.time(),
              metadata={"album": "x", "n": 1}, webhook_url="https://example.com/hook")
    return job.with_(**changes)


def new_event(job: Job, at: float, **changes: Any) -> WebhookEvent:
    event = WebhookEvent(f"evt_{secrets.token_hex(6)}", job.id, job.appkey, "https://example.com/hook",
                         b'{"id": "x", "\xff": 1}', at, at)
    return event.with_(**changes)


async def created(store: Store, job: Job) -> Job:
    stored, was_new = await store.create_job(job)
    assert was_new
    return stored


# -- the contract, on both stores -----------------------------------------------------------------


async def test_a_job_comes_back_as_written(store: Store) -> None:
    job = await created(store, new_job())
    assert job.seq > 0 and await store.get_job(job.id) == job
    ended = job.with_(status=SUCCEEDED, progress=100.0, completed_at=time.time(), expires_at=time.time() + 60,
                      input_info={"format": "mp3", "duration": 215.3}, cache_hit=True, attempts=1,
                      result={"vocals": StoredResult("results/x/vocals.wav", "wav", 10, "ab", 1.5),
                              "no_vocals": StoredResult(None, "wav", copied=True)})
    assert await store.transition(ended, ACTIVE)
    assert await store.get_job(job.id) == ended
    failed = await created(store, new_job(error=None))
    broken = failed.with_(status=FAILED, error=JobError(400, 40000022, "IllegalPayload", "bad audio"))
    assert await store.transition(broken, ACTIVE)
    assert await store.get_job(failed.id) == broken
    assert await store.get_job("job_missing") is None
    assert await store.job_ids() == {job.id, failed.id}


async def test_lists_newest_first_with_cursor_and_filters(store: Store) -> None:
    jobs = [await created(store, new_job()) for _ in range(5)]
    other = await created(store, new_job("b"))
    assert [job.seq for job in jobs] == sorted({job.seq for job in jobs})
    assert await store.transition(jobs[1].with_(status=SUCCEEDED), ACTIVE)
    assert await store.transition(jobs[3].with_(status=FAILED), ACTIVE)
    ids = [job.id for job in reversed(jobs)]
    assert [job.id for job in await store.list_jobs("a", (), 10)] == ids
    page = await store.list_jobs("a", (), 2)
    assert [job.id for job in page] == ids[:2]
    assert [job.id for job in await store.list_jobs("a", (), 2, page[-1].seq)] == ids[2:4]
    ended = await store.list_jobs("a", {SUCCEEDED, FAILED}, 10)
    assert [job.id for job in ended] == [jobs[3].id, jobs[1].id]
    assert [job.id for job in await store.list_jobs("a", {SUCCEEDED, FAILED}, 1, jobs[3].seq)] == [jobs[1].id]
    assert [job.id for job in await store.list_jobs("a", {QUEUED}, 10)] == [jobs[4].id, jobs[2].id, jobs[0].id]
    assert [job.id for job in await store.list_jobs("b", (), 10)] == [other.id]
    assert await store.list_jobs("nobody", (), 10) == []


async def test_an_idempotency_key_names_one_job_for_its_appkey(store: Store) -> None:
    original = await created(store, new_job())
    again, was_new = await store.create_job(new_job(), "key-1", 0.0)
    assert was_new
    assert await store.create_job(new_job(), "key-1", 0.0) == (again, False)
    assert (await store.create_job(new_job("b"), "key-1", 0.0))[1]  # another appkey's key
    later, was_new = await store.create_job(new_job(), "key-1", again.created_at + 1)  # the first is too old
    assert was_new and later.id != again.id
    assert await store.create_job(new_job(), "key-1", 0.0) == (later, False)
    assert await store.get_job(original.id) == original


async def test_an_idempotency_key_names_its_job_for_the_same_request_only(store: Store) -> None:
    first, was_new = await store.create_job(new_job(), "key-2", 0.0, "fp-a")
    assert was_new
    assert await store.create_job(new_job(), "key-2", 0.0, "fp-a") == (first, False)
    with pytest.raises(IdempotencyMismatch) as refused:
        await store.create_job(new_job(), "key-2", 0.0, "fp-b")
    assert refused.value.status.code == 42200001 and first.id in refused.value.detail
    assert (await store.create_job(new_job("b"), "key-2", 0.0, "fp-b"))[1]  # another appkey's key
    later, was_new = await store.create_job(new_job(), "key-2", first.created_at + 1, "fp-b")  # the first too old
    assert was_new and later.id != first.id
    assert await store.create_job(new_job(), "key-2", 0.0, "fp-b") == (later, False)
    unmarked, _ = await store.create_job(new_job(), "key-3", 0.0)  # as the previous version stored keys
    assert await store.create_job(new_job(), "key-3", 0.0, "fp-c") == (unmarked, False)
    assert [job.id for job in await store.list_jobs("a", (), 10)] == [unmarked.id, later.id, first.id]


async def test_transition_applies_only_from_the_named_statuses_with_its_event(store: Store) -> None:
    job = await created(store, new_job())
    running = job.with_(status=PROCESSING, started_at=time.time(), attempts=1)
    assert await store.transition(running, {QUEUED})
    assert not await store.transition(running.with_(attempts=5), {QUEUED})
    assert await store.get_job(job.id) == running
    again = running.with_(attempts=2)  # a worker taking over lapsed work
    assert await store.transition(again, ACTIVE)
    done = again.with_(status=SUCCEEDED, completed_at=time.time())
    event = new_event(done, time.time())
    assert await store.transition(done, ACTIVE, event)
    assert not await store.transition(done.with_(status=FAILED), ACTIVE, new_event(done, time.time()))
    assert await store.get_job(job.id) == done
    assert await store.events_of(job.id) == [event]
    assert not await store.transition(new_job(), ACTIVE)  # no such job


async def test_progress_only_grows_and_only_while_processing(store: Store) -> None:
    job = await created(store, new_job())
    await store.set_progress(job.id, 10.0)
    assert (await store.get_job(job.id)).progress == 0.0  # type: ignore[union-attr]
    running = job.with_(status=PROCESSING)
    assert await store.transition(running, {QUEUED})
    for progress in (12.5, 40.25, 30.0):
        await store.set_progress(job.id, progress)
    assert (await store.get_job(job.id)).progress == 40.25  # type: ignore[union-attr]
    assert await store.transition(running.with_(status=SUCCEEDED, progress=100.0), ACTIVE)
    await store.set_progress(job.id, 101.0)
    assert (await store.get_job(job.id)).progress == 100.0  # type: ignore[union-attr]


async def test_the_stems_seconds_ready_are_kept_with_progress_and_cleared_by_a_transition(store: Store) -> None:
    job = await created(store, new_job())
    running = job.with_(status=PROCESSING)
    assert await store.transition(running, {QUEUED})
    assert (await store.get_job(job.id)).ready is None  # type: ignore[union-attr]
    await store.set_progress(job.id, 20.0, {"vocals": 12.5, "drums": 0.0})
    await store.set_progress(job.id, 30.0)  # progress alone keeps the seconds last told
    now = await store.get_job(job.id)
    assert now is not None and (now.progress, now.ready) == (30.0, {"vocals": 12.5, "drums": 0.0})
    assert [listed.ready for listed in await store.list_jobs(job.appkey, {PROCESSING}, 10, None)] == \
        [{"vocals": 12.5, "drums": 0.0}]
    assert await store.transition(running.with_(attempts=2), {PROCESSING})  # another run starts over
    assert (await store.get_job(job.id)).ready is None  # type: ignore[union-attr]


async def test_queue_heads_and_oldest_queued(store: Store) -> None:
    assert await store.queue_heads() == [] and await store.oldest_queued() is None
    a1, b1, a2, a3 = [await created(store, new_job(appkey)) for appkey in "abaa"]
    heads = await store.queue_heads()
    assert [(h.appkey, h.job_id, h.seq, h.created_at, h.queued) for h in heads] == \
        [("a", a1.id, a1.seq, a1.created_at, 3), ("b", b1.id, b1.seq, b1.created_at, 1)]
    assert await store.oldest_queued() == a1.created_at
    assert await store.transition(a1.with_(status=PROCESSING), {QUEUED})
    assert await store.transition(b1.with_(status=PROCESSING), {QUEUED})
    assert [(h.appkey, h.job_id, h.queued) for h in await store.queue_heads()] == [("a", a2.id, 2)]
    assert await store.oldest_queued() == a2.created_at
    assert await store.transition(a1.with_(status=QUEUED), {PROCESSING})  # back in the queue, first again
    assert [(h.job_id, h.queued) for h in await store.queue_heads()] == [(a1.id, 3)]
    await store.delete_job(a1.id)
    assert await store.transition(a2.with_(status=JobStatus.CANCELLED), ACTIVE)
    await store.delete_job(a3.id)
    assert await store.queue_heads() == [] and await store.oldest_queued() is None


async def test_expired_jobs_and_delete(store: Store) -> None:
    now = time.time()
    old, young, active = [await created(store, new_job()) for _ in range(3)]
    gone = old.with_(status=SUCCEEDED, completed_at=now - 10, expires_at=now - 1)
    event = new_event(gone, now)
    assert await store.transition(gone, ACTIVE, event)
    assert await store.transition(young.with_(status=FAILED, expires_at=now + 100), ACTIVE)
    assert await store.expired_jobs(now, 10) == [gone]
    assert await store.expired_jobs(now + 200, 1) == [gone]
    assert [job.id for job in await store.expired_jobs(now + 200, 10)] == [old.id, young.id]
    await store.delete_job(old.id)
    await store.delete_job("job_missing")
    assert await store.get_job(old.id) is None and await store.events_of(old.id) == []
    assert await store.due_events(now + 1, 10) == [] and await store.next_event_at() is None
    assert await store.job_ids() == {young.id, active.id}
    assert [job.id for job in await store.list_jobs("a", (), 10)] == [active.id, young.id]
    assert await store.expired_jobs(now + 200, 10) == [young.with_(status=FAILED, expires_at=now + 100)]


async def test_a_deleted_job_is_known_as_deleted(store: Store) -> None:
    job, other = await created(store, new_job()), await created(store, new_job())
    assert not await store.was_deleted(job.id) and not await store.was_deleted("job_never")
    await store.delete_job(job.id)
    assert await store.was_deleted(job.id) and not await store.was_deleted(other.id)


async def test_a_job_lost_with_redis_is_not_known_as_deleted(client: Redis) -> None:
    store = RedisJobStore(client)
    job = await created(store, new_job())  # type: ignore[arg-type]
    await client.flushall()  # Redis restarted empty
    assert await store.get_job(job.id) is None and not await store.was_deleted(job.id)


async def test_an_upload_is_completed_once(store: Store) -> None:
    now = time.time()
    upload = Upload("upl_1", "a", now, now + 60, 1000)
    stale = Upload("upl_2", "a", now - 100, now - 1, 1000)
    await store.create_upload(upload)
    await store.create_upload(stale)
    assert await store.get_upload("upl_1") == upload and await store.get_upload("upl_x") is None
    filled = Upload("upl_1", "a", now, now + 3600, 1000, completed_at=now + 1, size=10, sha256="ab")
    assert await store.complete_upload(filled)
    assert not await store.complete_upload(Upload("upl_1", "a", now, now + 7200, 1000, completed_at=now + 2, size=5))
    assert not await store.complete_upload(Upload("upl_x", "a", now, now, 1, completed_at=now))
    assert await store.get_upload("upl_1") == filled
    assert await store.expired_uploads(now, 10) == [stale]
    assert await store.expired_uploads(now + 4000, 10) == [stale, filled]
    assert await store.upload_ids() == {"upl_1", "upl_2"}
    await store.delete_upload("upl_2")
    assert await store.upload_ids() == {"upl_1"} and await store.get_upload("upl_2") is None


async def test_usage_counts_each_appkeys_bytes_uploads_and_jobs(store: Store) -> None:
    now = time.time()
    assert await store.usage("a") == StorageUsage()
    job = await created(store, new_job(input_bytes=100))
    assert await store.usage("a") == StorageUsage(100, 0, 1)
    ended = job.with_(status=SUCCEEDED, expires_at=now + 60, result={
        "vocals": StoredResult("results/x/vocals.wav", "wav", 30), "no_vocals": StoredResult(None, "wav", copied=True)})
    assert await store.transition(ended, ACTIVE)
    assert await store.get_job(job.id) == ended and await store.usage("a") == StorageUsage(130, 0, 1)
    await store.create_upload(Upload("upl_1", "a", now, now + 60, 1000))
    assert await store.usage("a") == StorageUsage(130, 1, 1)  # an upload not PUT yet holds no byte
    assert await store.complete_upload(Upload("upl_1", "a", now, now + 60, 1000, completed_at=now, size=50))
    await created(store, new_job("b", input_bytes=7))
    assert await store.usage("a") == StorageUsage(180, 1, 1) and await store.usage("b") == StorageUsage(7, 0, 1)
    await store.delete_job(job.id)
    assert await store.usage("a") == StorageUsage(50, 1, 0)
    await store.delete_upload("upl_1")
    assert await store.usage("a") == StorageUsage() and await store.usage("b") == StorageUsage(7, 0, 1)


def quota_of(refusal: pytest.ExceptionInfo[StorageQuotaExceeded]) -> dict[str, Any]:
    assert refusal.value.status.http == 429 and refusal.value.status.code == 42900002
    assert refusal.value.headers["Retry-After"]
    return refusal.value.quota


async def test_limits_refuse_what_does_not_fit_and_nothing_of_it_is_stored(store: Store) -> None:
    now, limits = time.time(), StorageLimits(stored_bytes=100, uploads=1, jobs=3)
    first = await created(store, new_job(input_bytes=60))
    with pytest.raises(StorageQuotaExceeded) as refused:
        await store.create_job(big := new_job(input_bytes=41), limits=limits)
    assert quota_of(refused) == {"exceeded": "bytes", "held": 60, "limit": 100}
    assert await store.get_job(big.id) is None and await store.usage("a") == StorageUsage(60, 0, 1)
    keyed, was_new = await store.create_job(new_job(input_bytes=40), "key-1", 0.0, limits=limits)  # exactly full
    assert was_new and await store.usage("a") == StorageUsage(100, 0, 2)
    for full in (new_job(), new_job(input_kind=InputKind.STORED, input_bytes=1)):  # a URL job adds results later
        with pytest.raises(StorageQuotaExceeded) as refused:
            await store.create_job(full, limits=limits)
        assert quota_of(refused)["exceeded"] == "bytes"
    with pytest.raises(StorageQuotaExceeded) as refused:
        await store.create_upload(Upload("upl_1", "a", now, now + 60, 1000), limits)
    assert quota_of(refused) == {"exceeded": "bytes", "held": 100, "limit": 100}
    assert await store.get_upload("upl_1") is None
    assert await store.create_job(new_job(), "key-1", 0.0, limits=limits) == (keyed, False)  # its job, however full
    assert (await store.create_job(new_job("b", input_bytes=100), limits=limits))[1]  # another appkey's room

    roomy = StorageLimits(stored_bytes=1000, uploads=1, jobs=2)
    with pytest.raises(StorageQuotaExceeded) as refused:
        await store.create_job(new_job(), limits=roomy)
    assert quota_of(refused) == {"exceeded": "jobs", "held": 2, "limit": 2}
    await store.create_upload(upload := Upload("upl_1", "a", now, now + 60, 1000), roomy)
    with pytest.raises(StorageQuotaExceeded) as refused:
        await store.create_upload(Upload("upl_2", "a", now, now + 60, 1000), roomy)
    assert quota_of(refused) == {"exceeded": "uploads", "held": 1, "limit": 1}
    with pytest.raises(StorageQuotaExceeded) as refused:
        await store.complete_upload(replace(upload, completed_at=now, size=901), roomy)
    assert quota_of(refused) == {"exceeded": "bytes", "held": 100, "limit": 1000}
    assert await store.get_upload("upl_1") == upload and await store.usage("a") == StorageUsage(100, 1, 2)
    assert await store.complete_upload(filled := replace(upload, completed_at=now, size=900), roomy)
    assert await store.get_upload("upl_1") == filled and await store.usage("a") == StorageUsage(1000, 1, 2)
    assert not await store.complete_upload(filled, roomy)  # completed already: no refusal, no second charge
    await store.delete_job(first.id)
    assert await store.usage("a") == StorageUsage(940, 1, 1)
    assert (await created(store, new_job(input_bytes=60))).input_bytes == 60


async def test_events_are_due_until_delivered(store: Store) -> None:
    now = time.time()
    job = await created(store, new_job())
    done = job.with_(status=SUCCEEDED)
    event = new_event(done, now)
    assert await store.next_event_at() is None
    assert await store.transition(done, ACTIVE, event)
    assert await store.next_event_at() == now
    assert await store.due_events(now - 1, 10) == []
    assert await store.due_events(now, 10) == [event]
    failed = event.with_(attempts=1, next_attempt_at=now + 30, last_error="HTTP 500")
    await store.event_attempted(failed)
    assert await store.next_event_at() == now + 30
    assert await store.due_events(now + 29, 10) == []
    assert await store.due_events(now + 30, 10) == [failed]
    delivered = failed.with_(attempts=2, delivered_at=now + 31, last_error="")
    await store.event_attempted(delivered)
    assert await store.next_event_at() is None and await store.due_events(now + 10_000, 10) == []
    assert await store.events_of(job.id) == [delivered]


# -- what only the shared store does -----------------------------------------------------------


async def test_creating_a_job_enqueues_its_work_once(client: Redis) -> None:
    store = RedisJobStore(client)
    job, _ = await store.create_job(new_job("acme"), "key")
    await store.create_job(new_job("acme"), "key")  # the same job: nothing enqueued again
    entries = await client.xrange(keys.stream("batch", "acme"))
    assert len(entries) == 1
    fields = entries[0][1]
    assert (fields[b"kind"], fields[b"id"], fields[b"attempt"]) == (b"job", job.id.encode(), b"0")
    assert abs(int(fields[b"enqueued"]) / 1000 - time.time()) < 60  # ms
    assert await client.zscore(keys.ready("batch"), "acme") is not None
    assert await client.sismember(keys.STREAMS, keys.stream("batch", "acme"))


async def test_deleting_leaves_nothing_of_a_job_or_upload_behind(client: Redis) -> None:
    store, now = RedisJobStore(client), time.time()
    queue = {keys.stream("batch", "a").encode(), keys.ready("batch").encode(), keys.STREAMS.encode()}
    before = set(await client.keys(keys.PREFIX + "*"))
    job = await created(store, new_job(input_bytes=5))
    assert await store.transition(job.with_(status=PROCESSING), {QUEUED})
    ended = job.with_(status=SUCCEEDED, expires_at=now, result={"vocals": StoredResult("results/x/v.wav", "wav", 3)})
    assert await store.transition(ended, ACTIVE, new_event(ended, now))
    await store.create_upload(upload := Upload("upl_1", "a", now, now + 60, 10))
    assert await store.complete_upload(replace(upload, completed_at=now, size=4))
    assert await store.usage("a") == StorageUsage(12, 1, 1)
    await store.delete_job(job.id)
    await store.delete_upload("upl_1")
    tombstone = deleted_key(job.id).encode()  # the id alone, for an hour: a stream on it says cancelled
    assert set(await client.keys(keys.PREFIX + "*")) - before == {b"sami:jobs:seq", tombstone} | queue
    assert 0 < await client.ttl(tombstone) <= DELETED_TTL and await client.get(tombstone) == b"1"


async def test_two_fronts_see_each_others_writes(client: Redis, redis: Server) -> None:
    other = redis_client(redis.url)
    try:
        first, second = RedisJobStore(client), RedisJobStore(other)
        job = await created(first, new_job())
        assert await second.get_job(job.id) == job
        assert await second.transition(job.with_(status=PROCESSING), {QUEUED})
        assert (await first.get_job(job.id)).status is PROCESSING  # type: ignore[union-attr]
        keyed, was_new = await first.create_job(new_job(), "k")
        assert was_new and await second.create_job(new_job(), "k") == (keyed, False)
    finally:
        await other.aclose()


async def test_only_one_of_many_concurrent_claims_wins(client: Redis, redis: Server) -> None:
    other = redis_client(redis.url)
    try:
        stores = [RedisJobStore(client), RedisJobStore(other)]
        job = await created(stores[0], new_job())
        claims = [stores[i % 2].transition(job.with_(status=PROCESSING, attempts=i + 1), {QUEUED})
                  for i in range(20)]
        wins = await asyncio.gather(*claims)
        assert sum(wins) == 1
        winner = wins.index(True)
        assert (await stores[1].get_job(job.id)).attempts == winner + 1  # type: ignore[union-attr]
        assert await stores[0].queue_heads() == []
    finally:
        await other.aclose()


async def test_a_claimed_event_goes_to_one_sender(client: Redis, redis: Server) -> None:
    other = redis_client(redis.url)
    try:
        senders = [RedisJobStore(client, event_claim_seconds=5), RedisJobStore(other, event_claim_seconds=5)]
        now = time.time()
        events = []
        for _ in range(10):
            job = await created(senders[0], new_job())
            events.append(new_event(job, now))
            assert await senders[0].transition(job.with_(status=SUCCEEDED), ACTIVE, events[-1])
        rounds = await asyncio.gather(*(senders[i % 2].due_events(now, 3) for i in range(8)))
        taken = [event.id for round_ in rounds for event in round_]
        assert sorted(taken) == sorted(event.id for event in events)  # each exactly once
        assert await senders[1].due_events(now + 4, 10) == []
        assert len(await senders[1].due_events(now + 6, 10)) == 10  # the claims ran out: due again
        for event in events:
            await senders[0].event_attempted(event.with_(attempts=1, delivered_at=now))
        assert await senders[1].due_events(now + 1000, 10) == []
        await senders[1].event_attempted(events[0].with_(attempts=2, next_attempt_at=now))  # a late failure
        assert await senders[1].due_events(now + 1000, 10) == []  # delivered stays delivered
        assert (await senders[1].events_of(events[0].job_id))[0].delivered_at == now
    finally:
        await other.aclose()


async def test_changes_are_published(client: Redis, redis: Server) -> None:
    listener = redis_client(redis.url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(keys.JOB_CHANGED)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        store = RedisJobStore(client)
        job = await created(store, new_job())
        assert await store.transition(job.with_(status=PROCESSING), {QUEUED})
        await store.set_progress(job.id, 50.0)
        await store.set_progress(job.id, 40.0)  # no change, no message
        await store.delete_job(job.id)
        heard = []
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is not None:
            heard.append(message["data"])
        assert heard == [job.id.encode()] * 4
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_an_unreachable_redis_is_a_503_then_it_works_again(client: Redis, redis: Server) -> None:
    store = RedisJobStore(client)
    job = await created(store, new_job())
    redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as info:
            await asyncio.wait_for(store.get_job(job.id), 10)
        assert info.value.code is Code.BACKEND_UNAVAILABLE and info.value.headers["Retry-After"]
        assert time.monotonic() - started < 10
    finally:
        redis.resume()
    assert await store.get_job(job.id) == job


async def test_events_claimed_by_a_call_whose_answer_was_lost_come_to_the_next_call(client: Redis,
                                                                                    redis: Server) -> None:
    """The sender asks for due events as Redis stops answering: its call fails (a 503), yet the claim
    runs once Redis is back. Its next call gets those events, not nothing for `event_claim_seconds`
    (webhooks two minutes late after a Redis pause); another sender still does not."""
    sender, other = RedisJobStore(client), RedisJobStore(client)
    now = time.time()
    assert await sender.due_events(now, 10) == []  # its script is loaded, as in a sender that ran a while
    job = await created(sender, new_job())
    event = new_event(job, now)
    assert await sender.transition(job.with_(status=SUCCEEDED), ACTIVE, event)
    redis.pause()
    try:
        with pytest.raises(GatewayError):
            await sender.due_events(now, 10)
    finally:
        redis.resume()
    await asyncio.sleep(0.2)  # Redis runs the call that waited in its buffer: the event is claimed
    assert await other.due_events(now, 10) == []
    assert await sender.due_events(now, 10) == [event]
    assert await sender.due_events(now, 10) == []  # claimed by the call before
