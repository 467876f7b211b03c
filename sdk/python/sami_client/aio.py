"""`AsyncSamiClient`: the asyncio client, with `SamiClient`'s method names (add `await`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from . import _api, _download
from ._http import DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_WAIT, DEFAULT_TIMEOUT, AsyncTransport, RetryPolicy
from ._settings import CHUNK_SIZE, JobRef, check_upload_size, job_id, resolve_base_url, resolve_token
from ._sse import EventDecoder
from ._wait import DEFAULT_POLL, ProgressCallback, WaitPlan
from .errors import JobNotSucceeded
from .models import InvokeResult, Job, JobEvent, JobPage, ModelList, StemResult, Upload

__all__ = ["AsyncSamiClient"]


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """The file's bytes, read in a worker thread so the event loop never waits on the disk."""
    file = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
            yield chunk
    finally:
        file.close()


class AsyncSamiClient:
    """asyncio client; see `SamiClient` for the behaviour of each method. Use `async with`, or `aclose()`."""

    def __init__(self, base_url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self._own_client = http_client is None
        client = http_client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._transport = AsyncTransport(client, resolve_token(token), RetryPolicy(max_retries, max_retry_wait))

    @property
    def token(self) -> str | None:
        """The token sent as `Authorization: Bearer` to the Jobs API, and in invoke's body."""
        return self._transport.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._transport.token = value

    async def aclose(self) -> None:
        if self._own_client:
            await self._transport.client.aclose()

    async def __aenter__(self) -> AsyncSamiClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def get_token(self, access_key: str, secret_key: str, appkey: str, expiration: int = 3600, *,
                        region: str = "cn-north-1", service: str = "sami", endpoint: str | None = None) -> str:
        """A token for `appkey` from GetToken (V4-signed with the access key), also set on this client."""
        call = _api.get_token(endpoint or self.base_url, access_key, secret_key, appkey, expiration, region, service)
        self.token = await self._transport.call(call)
        return self.token

    async def invoke(self, appkey: str, namespace: str = "MusicSourceSeparate", *, data: bytes | None = None,
                     url: str | None = None, payload: Mapping[str, Any] | None = None, token: str | None = None,
                     retries: int | None = None) -> InvokeResult:
        """SAMI invoke: `data` bytes or a `url` to fetch, `payload` the namespace's parameters."""
        call = _api.invoke(appkey, namespace, token or self.token, data, url, payload, retries)
        return await self._transport.call(call)

    async def upload_file(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (streamed) for `submit(upload_id=...)`; returns the upload id."""
        file = Path(path)
        size = (await asyncio.to_thread(file.stat)).st_size
        slot = await self._transport.call(_api.create_upload())
        check_upload_size(file, size, slot)
        done: Upload = await self._transport.call(_api.put_upload(slot, size, lambda: _file_chunks(file)))
        return done.upload_id

    async def submit(self, input: Any = None, *, file: str | os.PathLike[str] | None = None, url: str | None = None,
                     upload_id: str | None = None, data: bytes | None = None, model: str | None = None,
                     stems: str | Iterable[str] | None = None, output: str | Mapping[str, Any] | None = None,
                     name: str | None = None, metadata: Mapping[str, Any] | None = None,
                     webhook_url: str | None = None, copy_results_to: Mapping[str, str] | None = None,
                     idempotency_key: str | None = None) -> Job:
        """Create a job (a `file` is uploaded first); safe to retry thanks to its Idempotency-Key."""
        request = _api.job_request(input, file=file, url=url, upload_id=upload_id, data=data, model=model,
                                   stems=stems, output=output, name=name, metadata=metadata,
                                   webhook_url=webhook_url, copy_results_to=copy_results_to)
        if request.file is not None:
            request.body["input"] = {"upload_id": await self.upload_file(request.file)}
        return await self._transport.call(_api.submit(request.body, idempotency_key))

    async def get(self, id: JobRef, wait: float | None = None) -> Job:
        """The job; with `wait` (seconds, up to 60), answered as soon as it ends or after that long."""
        return await self._transport.call(_api.get(job_id(id), wait, self.timeout))

    async def wait(self, id: JobRef, timeout: float | None = None, poll: float = DEFAULT_POLL,
                   on_progress: ProgressCallback | None = None) -> Job:
        """Long-poll until the job ends and return it (WaitTimeout after `timeout`)."""
        plan = WaitPlan(job_id(id), timeout, poll, on_progress)
        while True:
            job = await self.get(plan.job_id, wait=plan.next_poll())
            if plan.observe(job):
                return job
            await asyncio.sleep(plan.pause())

    async def list(self, status: str | Iterable[str] | None = None, limit: int | None = None,
                   cursor: str | None = None) -> JobPage:
        """One page of this appkey's jobs, newest first."""
        return await self._transport.call(_api.list_jobs(status, limit, cursor))

    async def models(self) -> ModelList:
        """The models a job may name now (the default first), each with its stems, and the output options."""
        return await self._transport.call(_api.models())

    async def iter_jobs(self, status: str | Iterable[str] | None = None,
                        page_size: int | None = None) -> AsyncIterator[Job]:
        """Every job of this appkey, newest first, page after page (`async for`)."""
        cursor: str | None = None
        while True:
            page = await self.list(status, page_size, cursor)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def events(self, id: JobRef) -> AsyncIterator[JobEvent]:
        """The job's Server-Sent Events until it ends or the gateway closes the stream (`async for`)."""
        async with self._transport.stream(_api.events(job_id(id), self.timeout)) as response:
            decoder = EventDecoder()
            async for text in response.aiter_text():
                for event in decoder.feed_text(text):
                    yield event
                    if event.is_terminal:
                        return

    async def cancel(self, id: JobRef) -> Job:
        """Cancel a queued or processing job; a job already ended is returned unchanged."""
        return await self._transport.call(_api.cancel(job_id(id)))

    async def delete(self, id: JobRef) -> None:
        """Delete the job, its input and its results."""
        await self._transport.call(_api.delete(job_id(id)))

    async def download(self, job: JobRef, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every result file as `<stem>.<ext>` in `folder`, and `results.json` describing them."""
        current = job if isinstance(job, Job) and job.succeeded else await self.get(job_id(job))
        _download.require_succeeded(current)
        target = Path(folder)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        written = {stem: await self._fetch(current.id, stem, result, target / _download.filename(stem, result))
                   for stem, result in _download.to_fetch(current).items()}
        await asyncio.to_thread(_download.write_manifest, current, written, target)
        return written

    async def download_result(self, id: JobRef, stem: str, path: str | os.PathLike[str]) -> Path:
        """Write one stem's result file to `path`. While the job is processing the gateway sends the stem
        as it is computed, and this returns once it is complete (Conflict while the job is queued)."""
        return await self._fetch(job_id(id), stem, StemResult(), Path(path))

    async def iter_result(self, id: JobRef, stem: str, *, poll: float = 1.0) -> AsyncIterator[bytes]:
        """The stem's bytes as they are computed (see `SamiClient.iter_result`)."""
        key = job_id(id)
        while (job := await self.get(key)).status == "queued":
            await asyncio.sleep(poll)
        if job.is_terminal and not job.succeeded:
            raise JobNotSucceeded(f"job {key} is {job.status}: it has no results", job)
        try:
            async with self._transport.stream(_api.result(key, stem)) as response:
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    yield chunk
        except httpx.TransportError as exc:
            raise _download.cut_short(await self.get(key), stem, exc) from exc

    async def _fetch(self, id: str, stem: str, result: StemResult, path: Path) -> Path:
        call = _api.result(id, stem) if self.token or not result.url else _api.signed_result(result.url)
        part = await asyncio.to_thread(_download.PartFile, path, result.sha256, result.size)
        try:
            async with self._transport.stream(call) as response:
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    await asyncio.to_thread(part.write, chunk)
        except BaseException:
            part.abort()  # quick, and must run even when the task is being cancelled
            raise
        return await asyncio.to_thread(part.finish)
