"""`BlobStore` on S3-compatible storage, shared by every front and worker of a scale-out deployment.

Objects are named `<prefix>/<key>` in one bucket. A PUT makes an object visible whole or not at
all, so a file appears under its key only once it is complete, as with the local store. Streams
are spooled to local disk first (their size and SHA-256 known, `max_bytes` enforced before any
byte is stored), and reads come back as a memory map of a local copy. The endpoint and
credentials are boto3's own `AWS_*` variables; clients download results through presigned URLs,
signed by a read-only identity of their own when one is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import mmap
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from ..errors import Code, error
from ..jobs.blobs import READ_BYTES, WRITE_BATCH_BYTES, Scratch, Written, check_key, mapped, measure, spool

RETRY_AFTER = "5"
S3_THREADS = 16  # storage calls at once per process: each mostly waits on the network
T = TypeVar("T")
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
STALE_SPOOL_SECONDS = 24 * 3600  # another process's spool folder untouched this long is a crash's leftover
# Two attempts of at most 10 s each: a storage that stops answering is a 503 within ~25 s, never a hung request.
# (`total_max_attempts` counts the first try; botocore's `max_attempts` would add a third.)
CLIENT_CONFIG = Config(signature_version="s3v4", connect_timeout=2, read_timeout=10,
                       retries={"total_max_attempts": 2, "mode": "standard"})
# One PUT up to 256 MiB (inputs are at most 100 MB): fewer requests, and no half-finished multipart uploads.
TRANSFER = TransferConfig(multipart_threshold=256 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)
UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError,
               ResponseStreamingError)


def _server_error(exc: BaseException) -> int | None:
    """The 5xx status behind a ClientError (or boto3's wrapper of one around an upload), else None."""
    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
        exc = exc.__context__
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status if status >= 500 else None
    return None


@contextmanager
def storage_unavailable() -> Iterator[None]:
    """Object storage unreachable, too slow or failing: 503 BACKEND_UNAVAILABLE with Retry-After."""
    try:
        yield
    except UNREACHABLE as exc:
        raise error(Code.BACKEND_UNAVAILABLE, f"object storage: {type(exc).__name__}",
                    {"Retry-After": RETRY_AFTER}) from exc
    except (ClientError, S3UploadFailedError) as exc:
        status = _server_error(exc)
        if status is None:
            raise
        raise error(Code.BACKEND_UNAVAILABLE, f"object storage: HTTP {status}", {"Retry-After": RETRY_AFTER}) from exc


def _send_body_at_once(params: dict[str, Any], **_: Any) -> None:
    """Drop botocore's `Expect: 100-continue`. When a server answers one with its final status instead of
    a 100 (SeaweedFS does for an empty body), botocore keeps that status line for the connection, and the
    next upload on it misreads its answer and hangs until the read timeout."""
    params["headers"].pop("Expect", None)


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


@dataclass(frozen=True)
class ReadKey:
    """The credentials that sign download URLs: an identity with read-only rights on the bucket."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3BlobStore(Scratch):
    """`BlobStore` on `s3://<bucket>/<prefix>`, with local temporary files under `<local_root>/tmp`.
    Download URLs go to `public_endpoint` (default: the client's) signed by `read_key` (default:
    the store's own credentials)."""

    def __init__(self, bucket: str, prefix: str, local_root: Path, public_endpoint: str = "",
                 read_key: ReadKey | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_endpoint = public_endpoint
        self.read_key = read_key
        # Several processes on one host may share `local_root`: each spools in a folder of its own.
        self._area = local_root / "tmp"
        self._tmp = self._area / f"proc-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: Any = None
        self._public: Any = None  # signs the URLs clients download from
        # Threads of its own: the loop's default ones decode and encode audio, and a storage call
        # (a readiness probe, the input a job waits for) must not queue behind that work, nor it behind S3.
        self._threads = ThreadPoolExecutor(S3_THREADS, thread_name_prefix="s3")

    async def _call(self, function: Callable[[], T]) -> T:
        """`function` on the store's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, function)

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        stale = time.time() - STALE_SPOOL_SECONDS
        for folder in self._area.glob("proc-*"):  # left by processes that crashed long ago
            with contextlib.suppress(OSError):
                if folder != self._tmp and folder.stat().st_mtime < stale:
                    shutil.rmtree(folder, ignore_errors=True)
        session = boto3.session.Session()
        self._client = session.client("s3", config=CLIENT_CONFIG)
        self._client.meta.events.register_last("before-call.s3", _send_body_at_once)
        public: dict[str, str] = {}
        if self.public_endpoint:
            public["endpoint_url"] = self.public_endpoint
        if self.read_key is not None:
            public.update(aws_access_key_id=self.read_key.access_key_id,
                          aws_secret_access_key=self.read_key.secret_access_key)
        self._public = session.client("s3", config=CLIENT_CONFIG, **public) if public else self._client

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _upload(self, source: Path, name: str) -> Written:
        written = measure(source)
        with storage_unavailable():
            self._client.upload_file(str(source), self.bucket, name, Config=TRANSFER)
        return written

    async def put_file(self, key: str, source: Path) -> Written:
        name = self._name(key)

        def upload() -> Written:
            written = self._upload(source, name)
            source.unlink(missing_ok=True)
            return written
        return await self._call(upload)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Written:
        name = self._name(key)
        temp = self._temp()
        try:
            await spool(temp, chunks, max_bytes)
            return await self._call(lambda: self._upload(temp, name))
        finally:
            temp.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes) -> Written:
        await self.put_part(key, data)  # one PUT either way: S3 keeps what it acknowledged
        return Written(len(data), hashlib.sha256(data).hexdigest())

    async def put_part(self, key: str, data: bytes) -> None:
        name = self._name(key)

        def put() -> None:
            with storage_unavailable():
                self._client.put_object(Bucket=self.bucket, Key=name, Body=data)
        await self._call(put)

    async def copy(self, source: str, key: str) -> None:
        origin, name = self._name(source), self._name(key)

        def copy() -> None:
            with storage_unavailable():
                self._client.copy_object(Bucket=self.bucket, Key=name,
                                         CopySource={"Bucket": self.bucket, "Key": origin})
        await self._call(copy)

    async def move(self, source: str, key: str) -> None:
        """A copy (the object appears under `key` whole), then the source deleted: S3 has no rename."""
        await self.copy(source, key)
        origin = self._name(source)

        def delete() -> None:
            with storage_unavailable():
                self._delete([origin])
        await self._call(delete)

    async def read(self, key: str) -> bytes | mmap.mmap:
        name = self._name(key)

        def load() -> bytes | mmap.mmap:
            temp = self._temp()
            try:
                with open(temp, "wb") as handle:
                    self._download(name, handle)
                return mapped(temp)
            finally:
                temp.unlink(missing_ok=True)  # the map keeps the bytes until it is closed
        return await self._call(load)

    async def read_from(self, key: str, start: int) -> AsyncIterator[bytes]:
        name = self._name(key)

        def get() -> Any:
            with storage_unavailable():
                return self._body(name, start)
        body = await self._call(get)
        if body is None:
            return
        chunks = body.iter_chunks(READ_BYTES)

        def piece() -> bytes:
            with storage_unavailable():
                return next(chunks, b"")
        try:
            while chunk := await self._call(piece):
                yield chunk
        finally:
            body.close()

    def _body(self, name: str, start: int = 0) -> Any:
        """The object's body from byte `start` on (None when `start` is its end); FileNotFoundError if
        there is no such object."""
        ranged = {"Range": f"bytes={start}-"} if start else {}
        try:
            return self._client.get_object(Bucket=self.bucket, Key=name, **ranged)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"no object {name!r}") from exc
            if start and exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return None
            raise

    def _download(self, name: str, handle: BinaryIO) -> None:
        with storage_unavailable():
            body = self._body(name)
            with body:
                for chunk in body.iter_chunks(WRITE_BATCH_BYTES):
                    handle.write(chunk)
            handle.flush()

    def local_path(self, key: str) -> Path | None:
        """Never a local file: every object lives in the bucket."""
        self._name(key)
        return None

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The pages of ListObjectsV2 under `prefix` (every object, at any depth)."""
        yield from self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)

    async def delete_prefix(self, prefix: str) -> None:
        name = self._name(prefix)

        def delete() -> None:
            with storage_unavailable():
                self._delete([name])
                for page in self._list(name + "/"):
                    names = [item["Key"] for item in page.get("Contents", [])]
                    for start in range(0, len(names), DELETE_BATCH):
                        self._delete(names[start:start + DELETE_BATCH])
        await self._call(delete)

    def _delete(self, names: list[str]) -> None:
        if not names:
            return
        answer = self._client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name in names], "Quiet": True})
        if errors := answer.get("Errors"):
            first = errors[0]
            raise OSError(f"object storage kept {len(errors)} objects, e.g. {first.get('Key')!r}: "
                          f"{first.get('Code')} {first.get('Message')}")

    async def folders(self, area: str, before: float | None = None) -> set[str]:
        """The first name after `area/` of every object under it; with `before` (unix seconds), only
        the names whose newest object was written before it (by the storage's Last-Modified).

        A flat listing rather than a delimited one: SeaweedFS keeps the empty directory of deleted objects
        and lists it as a common prefix, which would bring every swept folder back forever.
        """
        start = self._name(area) + "/"

        def names() -> set[str]:
            newest: dict[str, float] = {}
            with storage_unavailable():
                for page in self._list(start):
                    for item in page.get("Contents", []):
                        name = item["Key"][len(start):].split("/", 1)[0]
                        newest[name] = max(newest.get(name, 0.0), item["LastModified"].timestamp())
            return {name for name, written in newest.items() if name and (before is None or written < before)}
        return await self._call(names)

    def presign(self, key: str, ttl: float, filename: str | None = None, content_type: str | None = None) -> str:
        """A URL that downloads `key` without credentials for `ttl` seconds (at least 1)."""
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self._name(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        if content_type is not None:
            params["ResponseContentType"] = content_type
        url: str = self._public.generate_presigned_url("get_object", Params=params, ExpiresIn=max(1, math.ceil(ttl)))
        return url

    def public_url(self, key: str, ttl: float, filename: str, content_type: str) -> str:
        """Results are fetched straight from storage: the presigned URL (the BlobStore's verb)."""
        return self.presign(key, ttl, filename, content_type)

    async def ping(self) -> None:
        """Raise the 503 unless the bucket answers."""
        def head() -> None:
            with storage_unavailable():
                self._client.head_bucket(Bucket=self.bucket)
        await self._call(head)
