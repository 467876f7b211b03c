"""The S3 blob store against a real S3 server (SeaweedFS's `weed mini` on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from sami_gateway.cluster.s3_blobs import ReadKey, S3BlobStore
from sami_gateway.errors import Code, GatewayError
from sami_gateway.jobs.blobs import BlobTooLarge, Written
from tests.jobs.test_blobs import check_read_from
from tests.servers import S3_READ_ACCESS_KEY, S3_READ_SECRET_KEY, Server, free_port

MakeStore = Callable[..., Awaitable[S3BlobStore]]


@pytest.fixture
def make_store(s3: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeStore:
    """Opened stores on the test server's bucket, each under this test's own prefix unless told otherwise."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    own = f"t-{uuid.uuid4().hex[:12]}"

    async def make(prefix: str = own, public_endpoint: str = "", read_key: ReadKey | None = None) -> S3BlobStore:
        store = S3BlobStore(urlsplit(s3.url).netloc, prefix, tmp_path / uuid.uuid4().hex, public_endpoint, read_key)
        await store.open()
        return store
    return make


def written(data: bytes) -> Written:
    return Written(len(data), hashlib.sha256(data).hexdigest())


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def content(store: S3BlobStore, key: str) -> bytes:
    stored = await store.read(key)
    return bytes(stored)


async def test_every_verb_round_trips(make_store: MakeStore) -> None:
    store = await make_store()
    small, large, empty = b"vocals" * 1000, bytes(range(256)) * 12_345, b""  # large: ~3 MiB, several batches

    assert await store.put_bytes("inputs/a", small) == written(small)
    assert await store.put_stream("uploads/b", chunked(large, 65_536), len(large)) == written(large)
    assert await store.put_bytes("inputs/empty", empty) == written(empty)
    work = store.workdir()
    assert work.is_dir() and not any(work.iterdir())
    (work / "drums.wav").write_bytes(large[::-1])
    assert await store.put_file("results/j/drums.wav", work / "drums.wav") == written(large[::-1])
    assert not (work / "drums.wav").exists()
    await store.copy("uploads/b", "inputs/c")

    mapped = await store.read("uploads/b")
    assert isinstance(mapped, mmap.mmap) and mapped[:] == large
    assert await content(store, "inputs/a") == small
    assert await content(store, "inputs/c") == large
    assert await content(store, "results/j/drums.wav") == large[::-1]
    assert await store.read("inputs/empty") == b""
    assert store.local_path("inputs/a") is None
    assert not any(work.parent.glob("part-*"))  # downloads and spooled streams leave no local file
    store.discard(work)
    assert not work.exists()


async def test_an_empty_object_does_not_stall_the_next_upload(make_store: MakeStore) -> None:
    store = await make_store()  # botocore's 100-continue handling once left the next answer misread for 10 s
    started = time.monotonic()
    for index in range(3):
        await store.put_bytes(f"inputs/empty{index}", b"")
        await store.put_bytes(f"inputs/full{index}", b"x" * 100_000)
    assert time.monotonic() - started < 5
    assert await store.folders("inputs") == {f"{kind}{index}" for kind in ("empty", "full") for index in range(3)}


async def test_objects_are_named_under_the_prefix(make_store: MakeStore) -> None:
    store = await make_store()
    await store.put_bytes("inputs/a", b"named")
    whole_bucket = await make_store(prefix="")
    assert await content(whole_bucket, f"{store.prefix}/inputs/a") == b"named"
    with pytest.raises(ValueError, match="bad blob key"):
        await store.put_bytes("inputs/../a", b"x")


async def test_put_stream_refuses_past_max_bytes_and_stores_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    with pytest.raises(BlobTooLarge):
        await store.put_stream("uploads/big", chunked(b"x" * 3000, 1000), 2999)
    with pytest.raises(FileNotFoundError):
        await store.read("uploads/big")
    assert await store.folders("uploads") == set()
    assert not any(store.workdir().parent.glob("part-*"))
    assert await store.put_stream("uploads/exact", chunked(b"x" * 3000, 1000), 3000) == written(b"x" * 3000)


async def test_delete_prefix_takes_the_key_and_its_folder_not_its_neighbours(make_store: MakeStore) -> None:
    store = await make_store()
    for key in ("results/j1", "results/j1/a.wav", "results/j1/deep/b.wav", "results/j10", "results/j10/c.wav"):
        await store.put_bytes(key, key.encode())
    await store.delete_prefix("results/j1")
    for key in ("results/j1", "results/j1/a.wav", "results/j1/deep/b.wav"):
        with pytest.raises(FileNotFoundError):
            await store.read(key)
    assert await content(store, "results/j10") == b"results/j10"
    assert await content(store, "results/j10/c.wav") == b"results/j10/c.wav"
    assert await store.folders("results") == {"j10"}
    await store.delete_prefix("results/nothing")  # nothing there: no error


async def test_delete_prefix_pages_through_more_than_one_listing(make_store: MakeStore) -> None:
    store = await make_store()
    keys = [f"results/many/{index}" for index in range(1010)]  # a listing page holds 1000
    await asyncio.gather(*(store.put_bytes(key, b"") for key in keys))
    assert await store.folders("results/many") == {key.rsplit("/", 1)[1] for key in keys}
    await store.delete_prefix("results/many")
    assert await store.folders("results") == set()


async def test_folders_lists_objects_and_folders_directly_under_the_area(make_store: MakeStore) -> None:
    store = await make_store()
    for key in ("uploads/u1", "uploads/u2", "results/j1/vocals.wav", "results/j2/deep/drums.wav", "results/j3"):
        await store.put_bytes(key, b"x")
    assert await store.folders("uploads") == {"u1", "u2"}
    assert await store.folders("results") == {"j1", "j2", "j3"}
    assert await store.folders("inputs") == set()


async def test_folders_before_a_time_are_those_last_written_before_it(make_store: MakeStore) -> None:
    store = await make_store()
    for key in ("results/old/a.wav", "results/mixed/a.wav"):
        await store.put_bytes(key, b"x")
    await asyncio.sleep(2.5)  # Last-Modified counts whole seconds
    cut = time.time() - 1.0
    for key in ("results/mixed/b.wav", "results/new"):
        await store.put_bytes(key, b"x")
    assert await store.folders("results", before=cut) == {"old"}  # `mixed` has an object written after
    assert await store.folders("results") == {"old", "mixed", "new"}


async def test_move_puts_the_object_under_its_new_key_and_removes_the_old(make_store: MakeStore) -> None:
    store = await make_store()
    await store.put_bytes("uploads/upl_1", b"first")
    assert await store.put_stream("uploads/upl_1.put-a", chunked(b"second", 2), 100) == written(b"second")
    await store.move("uploads/upl_1.put-a", "uploads/upl_1")
    assert await content(store, "uploads/upl_1") == b"second"
    assert await store.folders("uploads") == {"upl_1"}
    with pytest.raises(FileNotFoundError):
        await store.read("uploads/upl_1.put-a")


async def test_read_of_a_missing_key_raises_file_not_found(make_store: MakeStore) -> None:
    store = await make_store()
    with pytest.raises(FileNotFoundError):
        await store.read("inputs/never-written")


def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET without credentials: (status, body, headers), the status of an HTTP error included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read(), dict(refused.headers)


async def test_presigned_url_downloads_without_credentials_until_it_expires(make_store: MakeStore) -> None:
    store = await make_store()
    await store.put_bytes("results/j/vocals.wav", b"RIFF-vocals")
    url = store.presign("results/j/vocals.wav", 1, filename="vocals.wav", content_type="audio/wav")
    status, body, headers = await asyncio.to_thread(fetch, url)
    assert (status, body) == (200, b"RIFF-vocals")
    assert headers["Content-Type"] == "audio/wav"
    assert headers["Content-Disposition"] == 'attachment; filename="vocals.wav"'
    await asyncio.sleep(2.5)
    status, body, _ = await asyncio.to_thread(fetch, url)
    assert status == 403 and b"RIFF-vocals" not in body


async def test_presigned_url_uses_the_public_endpoint(make_store: MakeStore, s3: Server) -> None:
    public = s3.env["AWS_ENDPOINT_URL"].replace("127.0.0.1", "localhost")  # the same server under another name
    store = await make_store(public_endpoint=public)
    await store.put_bytes("results/j/bass.wav", b"RIFF-bass")
    url = store.presign("results/j/bass.wav", 60)
    assert url.startswith(f"{public}/")
    status, body, _ = await asyncio.to_thread(fetch, url)
    assert (status, body) == (200, b"RIFF-bass")
    direct = store.public_url("results/j/bass.wav", 60, "bass.wav", "audio/wav")  # the BlobStore verb
    assert direct is not None and direct.startswith(f"{public}/")
    status, body, headers = await asyncio.to_thread(fetch, direct)
    assert (status, body, headers["Content-Type"]) == (200, b"RIFF-bass", "audio/wav")


def send(method: str, url: str, data: bytes | None = None) -> int:
    """A request without credentials; its status, that of an HTTP error included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


async def test_download_urls_are_signed_by_the_read_only_identity(make_store: MakeStore, s3: Server) -> None:
    """With a read key, clients get URLs that carry its credential, not the gateway's; they download,
    and the same identity can neither overwrite nor delete (the server refuses what it signs)."""
    store = await make_store(read_key=ReadKey(S3_READ_ACCESS_KEY, S3_READ_SECRET_KEY))
    await store.put_bytes("results/j/drums.wav", b"RIFF-drums")  # written with the gateway's own identity
    url = store.public_url("results/j/drums.wav", 60, "drums.wav", "audio/wav")
    assert url is not None
    credential = parse_qs(urlsplit(url).query)["X-Amz-Credential"][0]
    assert credential.split("/")[0] == S3_READ_ACCESS_KEY
    status, body, _ = await asyncio.to_thread(fetch, url)
    assert (status, body) == (200, b"RIFF-drums")

    reader = boto3.client("s3", endpoint_url=s3.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=S3_READ_ACCESS_KEY, aws_secret_access_key=S3_READ_SECRET_KEY)
    where = {"Bucket": store.bucket, "Key": f"{store.prefix}/results/j/drums.wav"}
    put = reader.generate_presigned_url("put_object", Params=where, ExpiresIn=60)
    delete = reader.generate_presigned_url("delete_object", Params=where, ExpiresIn=60)
    assert await asyncio.to_thread(send, "PUT", put, b"RIFF-forged") == 403
    assert await asyncio.to_thread(send, "DELETE", delete) == 403
    assert await content(store, "results/j/drums.wav") == b"RIFF-drums"
    own = store.presign("results/j/drums.wav", 60)
    assert parse_qs(urlsplit(own).query)["X-Amz-Credential"][0].split("/")[0] == S3_READ_ACCESS_KEY


async def test_without_a_read_key_urls_are_signed_by_the_gateways_identity(make_store: MakeStore,
                                                                           s3: Server) -> None:
    store = await make_store()
    await store.put_bytes("results/j/bass.wav", b"RIFF-bass")
    url = store.presign("results/j/bass.wav", 60)
    assert parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")[0] == s3.env["AWS_ACCESS_KEY_ID"]
    assert (await asyncio.to_thread(fetch, url))[:2] == (200, b"RIFF-bass")


async def test_paused_storage_is_a_503_and_works_again_after(make_store: MakeStore, s3: Server) -> None:
    store = await make_store()
    await store.ping()
    s3.pause()
    try:
        started = time.monotonic()
        outcomes = await asyncio.gather(store.ping(), store.put_bytes("inputs/p", b"paused"), return_exceptions=True)
        elapsed = time.monotonic() - started
    finally:
        s3.resume()
    assert elapsed < 30
    for outcome in outcomes:
        assert isinstance(outcome, GatewayError), outcome
        assert outcome.code is Code.BACKEND_UNAVAILABLE
        assert outcome.headers == {"Retry-After": "5"}
        assert outcome.detail.startswith("object storage: ")
    await store.ping()
    # Another key: the PUT that timed out may still land once the storage runs again, at any moment,
    # as a write cut off by a timeout may on any storage.
    assert await store.put_bytes("inputs/q", b"back") == written(b"back")
    assert await content(store, "inputs/q") == b"back"


async def test_unreachable_endpoint_is_a_503(make_store: MakeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = await make_store()
    with pytest.raises(GatewayError) as caught:
        await store.ping()
    assert caught.value.code is Code.BACKEND_UNAVAILABLE
    assert caught.value.detail == "object storage: EndpointConnectionError"


async def test_storage_calls_do_not_wait_for_the_loops_default_threads(make_store: MakeStore) -> None:
    """Audio decoding, encoding and file work use the event loop's default threads; when every one
    is busy, a storage call (a readiness probe, a job's input) still goes through at once."""
    store = await make_store()
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait, 30) for _ in range(64)]  # more than the pool has
    try:
        began = time.monotonic()
        await asyncio.wait_for(store.put_bytes("inputs/busy", b"x" * 1000), 10)
        assert await content(store, "inputs/busy") == b"x" * 1000
        await asyncio.wait_for(store.ping(), 10)
        assert time.monotonic() - began < 5
    finally:
        release.set()
        await asyncio.gather(*busy)


async def test_read_from_fetches_the_rest_of_an_object(make_store: MakeStore) -> None:
    await check_read_from(await make_store())  # a ranged GET from the offset on
