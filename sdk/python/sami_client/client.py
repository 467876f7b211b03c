"""`SamiClient`: the blocking client of the gateway (invoke, GetToken, uploads, jobs, results)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from . import _api, _download
from ._http import DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_WAIT, DEFAULT_TIMEOUT, RetryPolicy, Transport
from ._settings import CHUNK_SIZE, JobRef, check_upload_size, job_id, resolve_base_url, resolve_token
from ._sse import EventDecoder
from ._wait import DEFAULT_POLL, ProgressCallback, WaitPlan
from .errors import JobNotSucceeded
from .models import InvokeResult, Job, JobEvent, JobPage, ModelList, StemResult, Upload

__all__ = ["SamiClient"]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            yield chunk


class SamiClient:
    """Blocking client. `base_url` defaults to $SAMI_URL (else http://127.0.0.1:8080), `token` to $SAMI_TOKEN.

    Idempotent calls are retried on 429/503 and broken connections (honouring Retry-After), up to
    `max_retries` times, never waiting more than `max_retry_wait` seconds at once. Use it as a context
    manager, or call `close()`.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
                 http_client: httpx.Client | None = None) -> None:
        self.base_url = resolve_base_url(base_url)
        self.timeout = timeout
        self._own_client = http_client is None
        client = http_client or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._transport = Transport(client, resolve_token(token), RetryPolicy(max_retries, max_retry_wait))

    @property
    def token(self) -> str | None:
        """The token sent as `Authorization: Bearer` to the Jobs API, and in invoke's body."""
        return self._transport.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._transport.token = value

    def close(self) -> None:
        if self._own_client:
            self._transport.client.close()

    def __enter__(self) -> SamiClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def get_token(self, access_key: str, secret_key: str, appkey: str, expiration: int = 3600, *,
                  region: str = "cn-north-1", service: str = "sami", endpoint: str | None = None) -> str:
        """A token for `appkey` from GetToken (V4-signed with the access key), also set on this client.

        `endpoint` is where GetToken is served (default: the gateway itself).
        """
        call = _api.get_token(endpoint or self.base_url, access_key, secret_key, appkey, expiration, region, service)
        self.token = self._transport.call(call)
        return self.token

    def invoke(self, appkey: str, namespace: str = "MusicSourceSeparate", *, data: bytes | None = None,
               url: str | None = None, payload: Mapping[str, Any] | None = None, token: str | None = None,
               retries: int | None = None) -> InvokeResult:
        """SAMI invoke: `data` bytes or a `url` to fetch, `payload` the namespace's parameters.

        Not retried on 429/503 unless `retries` says how often (a separation is expensive to repeat).
        """
        call = _api.invoke(appkey, namespace, token or self.token, data, url, payload, retries)
        return self._transport.call(call)

    def upload_file(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (streamed) for `submit(upload_id=...)`; returns the upload id."""
        file = Path(path)
        size = file.stat().st_size
        slot = self._transport.call(_api.create_upload())
        check_upload_size(file, size, slot)
        done: Upload = self._transport.call(_api.put_upload(slot, size, lambda: _file_chunks(file)))
        return done.upload_id

    def submit(self, input: Any = None, *, file: str | os.PathLike[str] | None = None, url: str | None = None,
               upload_id: str | None = None, data: bytes | None = None, model: str | None = None,
               stems: str | Iterable[str] | None = None, output: str | Mapping[str, Any] | None = None,
               name: str | None = None, metadata: Mapping[str, Any] | None = None, webhook_url: str | None = None,
               copy_results_to: Mapping[str, str] | None = None, idempotency_key: str | None = None) -> Job:
        """Create a job. The input is one of `file` (uploaded first), `url`, `upload_id`, `data`, or `input`
        (a path, an http(s) URL, bytes, or the contract's input object). Safe to retry: an Idempotency-Key
        is sent (made here unless given)."""
        request = _api.job_request(input, file=file, url=url, upload_id=upload_id, data=data, model=model,
                                   stems=stems, output=output, name=name, metadata=metadata,
                                   webhook_url=webhook_url, copy_results_to=copy_results_to)
        if request.file is not None:
            request.body["input"] = {"upload_id": self.upload_file(request.file)}
        return self._transport.call(_api.submit(request.body, idempotency_key))

    def get(self, id: JobRef, wait: float | None = None) -> Job:
        """The job; with `wait` (seconds, up to 60), answered as soon as it ends or after that long."""
        return self._transport.call(_api.get(job_id(id), wait, self.timeout))

    def wait(self, id: JobRef, timeout: float | None = None, poll: float = DEFAULT_POLL,
             on_progress: ProgressCallback | None = None) -> Job:
        """Long-poll until the job succeeds, fails or is cancelled, and return it (WaitTimeout after `timeout`).

        `poll` is the length of one long poll; `on_progress(job)` is called whenever status or progress change.
        """
        plan = WaitPlan(job_id(id), timeout, poll, on_progress)
        while True:
            job = self.get(plan.job_id, wait=plan.next_poll())
            if plan.observe(job):
                return job
            time.sleep(plan.pause())

    def list(self, status: str | Iterable[str] | None = None, limit: int | None = None,
             cursor: str | None = None) -> JobPage:
        """One page of this appkey's jobs, newest first; `status` filters (e.g. ["succeeded", "failed"])."""
        return self._transport.call(_api.list_jobs(status, limit, cursor))

    def models(self) -> ModelList:
        """The models a job may name now (the default first), each with its stems, and the output options."""
        return self._transport.call(_api.models())

    def iter_jobs(self, status: str | Iterable[str] | None = None, page_size: int | None = None) -> Iterator[Job]:
        """Every job of this appkey, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list(status, page_size, cursor)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(self, id: JobRef) -> Iterator[JobEvent]:
        """The job's Server-Sent Events (status, progress) until it ends or the gateway closes the stream."""
        with self._transport.stream(_api.events(job_id(id), self.timeout)) as response:
            decoder = EventDecoder()
            for text in response.iter_text():
                for event in decoder.feed_text(text):
                    yield event
                    if event.is_terminal:
                        return

    def cancel(self, id: JobRef) -> Job:
        """Cancel a queued or processing job; a job already ended is returned unchanged."""
        return self._transport.call(_api.cancel(job_id(id)))

    def delete(self, id: JobRef) -> None:
        """Delete the job, its input and its results (cancelling it first if needed)."""
        self._transport.call(_api.delete(job_id(id)))

    def download(self, job: JobRef, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every result file as `<stem>.<ext>` in `folder`, and `results.json` describing them.

        Stems sent to custom storage (`copy_results_to`) are listed in results.json, not downloaded.
        Returns the files written, by stem. JobNotSucceeded unless the job has succeeded.
        """
        current = job if isinstance(job, Job) and job.succeeded else self.get(job_id(job))
        _download.require_succeeded(current)
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        written = {stem: self._fetch(current.id, stem, result, target / _download.filename(stem, result))
                   for stem, result in _download.to_fetch(current).items()}
        _download.write_manifest(current, written, target)
        return written

    def download_result(self, id: JobRef, stem: str, path: str | os.PathLike[str]) -> Path:
        """Write one stem's result file to `path`. While the job is processing the gateway sends the stem
        as it is computed, and this returns once it is complete (Conflict while the job is queued)."""
        return self._fetch(job_id(id), stem, StemResult(), Path(path))

    def iter_result(self, id: JobRef, stem: str, *, poll: float = 1.0) -> Iterator[bytes]:
        """The stem's bytes as they are computed, to be played or written while the job runs. Waits while
        the job is queued (asking every `poll` seconds); the bytes end as the finished file does.
        JobNotSucceeded when the job fails or is cancelled, before or during the stem."""
        key = job_id(id)
        while (job := self.get(key)).status == "queued":
            time.sleep(poll)
        if job.is_terminal and not job.succeeded:
            raise JobNotSucceeded(f"job {key} is {job.status}: it has no results", job)
        try:
            with self._transport.stream(_api.result(key, stem)) as response:
                yield from response.iter_bytes(CHUNK_SIZE)
        except httpx.TransportError as exc:
            raise _download.cut_short(self.get(key), stem, exc) from exc

    def _fetch(self, id: str, stem: str, result: StemResult, path: Path) -> Path:
        call = _api.result(id, stem) if self.token or not result.url else _api.signed_result(result.url)
        part = _download.PartFile(path, result.sha256, result.size)
        try:
            with self._transport.stream(call) as response:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    part.write(chunk)
        except BaseException:
            part.abort()
            raise
        return part.finish()

