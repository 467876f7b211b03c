"""The jobs routes: submit, list, get (long polling), cancel, delete, results, events; uploads and models."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ...auth.authenticator import Authorization
from ...errors import Code, error
from ...web.state import BODY_LIMIT, QUOTAS, STREAMS
from ..blob_keys import form_file_key
from ..blobs import BlobTooLarge, Written
from ..model import JobStatus, media_type
from ..requests import JobRequest, parse_job_request
from ..service import JobService
from ..storage_quota import StorageUsage
from .growing_results import growing_result
from .http import (
    CURSOR_PATTERN,
    authorized,
    base_url,
    chunks,
    file_timeout,
    job_response,
    json_response,
    parse_json,
    read_json,
    service,
)
from .models_route import list_models
from .sse import job_events

MAX_WAIT_SECONDS = 60.0  # the longest long poll
DEFAULT_LIMIT, MAX_LIMIT = 50, 100
CURSOR = re.compile(CURSOR_PATTERN)
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]+")  # printable ASCII: stored and hashed as it came, in either store
MAX_PARAMS_BYTES = 64 * 1024  # the `params` part of a multipart request: JSON, never a file


@dataclass(frozen=True)
class Form:
    """A multipart job request as read: its params, and the file's size and hash (None when it had no file)."""

    params: Any
    file: Written | None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise error(Code.ILLEGAL_PAYLOAD, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise error(Code.ILLEGAL_PAYLOAD, "Idempotency-Key must be printable ASCII")
    return key


async def _params(part: BodyPartReader, seconds: float) -> Any:
    """The `params` part, read as it arrives within `seconds`, refused once past MAX_PARAMS_BYTES."""
    text = bytearray()
    async for chunk in chunks(part, seconds):
        text += chunk
        if len(text) > MAX_PARAMS_BYTES:
            raise error(Code.ILLEGAL_PAYLOAD, f"params larger than {MAX_PARAMS_BYTES} bytes", {"Connection": "close"})
    return parse_json(bytes(text), "params")


async def _form_parts(request: web.Request, jobs: JobService, key: str) -> Form:
    """Read the form within the file's time allowance: `file` streamed under `key`, `params` parsed."""
    reader = await request.multipart()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + file_timeout(request, jobs.max_input_bytes)
    params: Any = {}
    file: Written | None = None
    while (part := await asyncio.wait_for(reader.next(), max(deadline - loop.time(), 0))) is not None:
        if not isinstance(part, BodyPartReader):
            raise error(Code.INVALID_PAYLOAD, "nested multipart is not accepted")
        if part.name == "file" and file is None:
            file = await jobs.blobs.put_stream(key, chunks(part, deadline - loop.time()), jobs.max_input_bytes)
        elif part.name == "params":
            params = await _params(part, deadline - loop.time())
        else:
            raise error(Code.ILLEGAL_PAYLOAD, f"unexpected form part {part.name!r}: send file and params")
    return Form(params, file)


async def _multipart(request: web.Request, jobs: JobService) -> tuple[JobRequest, str, Written]:
    """`file` streamed to storage, `params` parsed: (request, key of the stored file, its size and SHA-256)."""
    key = form_file_key()
    try:
        form = await _form_parts(request, jobs, key)
        if form.file is None:
            raise error(Code.EMPTY_URL, "a multipart job request needs a file part")
        return parse_job_request(form.params, has_file=True), key, form.file
    except BlobTooLarge as exc:
        await jobs.blobs.delete_prefix(key)
        raise error(Code.EXCEEDED_DATA_SIZE, f"file larger than {jobs.max_input_bytes} bytes",
                    {"Connection": "close"}) from exc
    except TimeoutError as exc:
        await jobs.blobs.delete_prefix(key)
        raise error(Code.BODY_TIMEOUT, "the form did not arrive in time", {"Connection": "close"}) from exc
    except (HttpProcessingError, ValueError) as exc:  # a form part aiohttp cannot parse
        await jobs.blobs.delete_prefix(key)
        raise error(Code.INVALID_PAYLOAD, "the form cannot be read", {"Connection": "close"}) from exc
    except BaseException:
        await jobs.blobs.delete_prefix(key)
        raise


async def submit_job(request: web.Request) -> web.Response:
    auth = authorized(request)
    jobs = service(request)
    key = _idempotency_key(request)
    kind = request.content_type
    async with request.app[QUOTAS].charge(auth.appkey, auth.quota):
        if kind == "multipart/form-data":
            if key is None:  # an appkey whose quota is full is refused before its file is read
                await jobs.check_room(auth.appkey, StorageUsage(0, 0, 1), unread_body=True)
            job_request, stored, file = await _multipart(request, jobs)
            try:
                job, created = await jobs.submit(auth, jobs.check(job_request), key, stored, file)
            finally:
                await jobs.blobs.delete_prefix(stored)
        elif kind in ("application/json", "") or kind.endswith("+json"):
            body = await read_json(request, request.app[BODY_LIMIT])
            job_request = await asyncio.to_thread(parse_job_request, body)  # base64 of up to 100 MB
            job, created = await jobs.submit(auth, jobs.check(job_request), key)
        else:
            raise error(Code.UNSUPPORTED_MEDIA_TYPE, f"{kind}: send application/json or multipart/form-data")
    if created:
        return job_response(request, job, 201, {"Location": f"/api/v1/jobs/{job.id}"})
    return job_response(request, job, 200, {"Location": f"/api/v1/jobs/{job.id}"})


def _statuses(text: str) -> list[JobStatus]:
    """`status=a,b`: those statuses; absent or empty: all. An empty item (`status=a,`) is a mistake."""
    if not text:
        return []
    try:
        return [JobStatus(item.strip()) for item in text.split(",")]
    except ValueError:
        raise error(Code.ILLEGAL_PAYLOAD, f"status must be among {[s.value for s in JobStatus]}") from None


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise error(Code.ILLEGAL_PAYLOAD, f"limit must be 1..{MAX_LIMIT}")
    return int(text)


def _cursor(text: str | None) -> int | None:
    """Where the previous page ended: the sequence number of its last job. Any such number is a
    cursor (past every job: an empty page), so a well-formed one is never refused."""
    if not text:
        return None
    if not CURSOR.fullmatch(text):
        raise error(Code.ILLEGAL_PAYLOAD, "cursor is not one this gateway gave")
    return int(text)


def _next_cursor(seq: int) -> str:
    return str(seq)


async def list_jobs(request: web.Request) -> web.Response:
    auth = authorized(request)
    jobs = service(request)
    limit = _limit(request.query.get("limit"))
    found = await jobs.list(auth, _statuses(request.query.get("status", "")), limit + 1,
                            _cursor(request.query.get("cursor")))
    page = found[:limit]
    base = base_url(request)
    return json_response({"jobs": [jobs.render(job, base) for job in page],
                          "next_cursor": _next_cursor(page[-1].seq) if len(found) > limit else None})


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        raise error(Code.ILLEGAL_PAYLOAD, f"wait must be 0..{MAX_WAIT_SECONDS:g} seconds") from None
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise error(Code.ILLEGAL_PAYLOAD, f"wait must be 0..{MAX_WAIT_SECONDS:g} seconds")
    return seconds


async def get_job(request: web.Request) -> web.Response:
    """The job; with `?wait=S`, as soon as it is terminal or after S seconds (long polling, which holds
    one of the appkey's stream slots)."""
    auth = authorized(request)
    wait = _wait_seconds(request.query.get("wait"))
    if not wait:
        return await _job_when(request, auth, 0.0)
    with request.app[STREAMS].hold(auth.appkey, auth.quota):
        return await _job_when(request, auth, wait)


async def _job_when(request: web.Request, auth: Authorization, wait: float) -> web.Response:
    """The job once it is terminal, or after `wait` seconds."""
    jobs = service(request)
    job_id = request.match_info["job_id"]
    deadline = time.monotonic() + wait
    while True:
        seen = jobs.events.version(job_id)
        job = await jobs.owned(auth, job_id)
        remaining = deadline - time.monotonic()
        if job.status.terminal or remaining <= 0:
            return job_response(request, job)
        await jobs.events.wait(job_id, seen, remaining)


async def cancel_job(request: web.Request) -> web.Response:
    job = await service(request).cancel(authorized(request), request.match_info["job_id"])
    return job_response(request, job)


async def delete_job(request: web.Request) -> web.Response:
    await service(request).delete(authorized(request), request.match_info["job_id"])
    return web.Response(status=204)


async def job_result(request: web.Request) -> web.StreamResponse:
    """One result file, with Range and ETag, or while the job is processing its bytes as they are written
    (`growing_result`); by signed URL (no token) or with the Bearer token."""
    jobs = service(request)
    job_id, stem = request.match_info["job_id"], request.match_info["stem"]
    if jobs.signer.has_signature(request.query):
        jobs.signer.check("GET", request.path, request.query)
        job = await jobs.store.get_job(job_id)
        if job is None:
            raise error(Code.JOB_NOT_FOUND, f"no job {job_id}")
    else:
        job = await jobs.owned(authorized(request), job_id)
    if job.status is JobStatus.PROCESSING:
        return await growing_result(request, jobs, job, stem)
    if job.status is not JobStatus.SUCCEEDED or job.result is None:
        raise error(Code.CONFLICT, f"the job is {job.status.value}: results exist once it is processing")
    item = job.result.get(stem)
    if item is None:
        raise error(Code.JOB_NOT_FOUND, f"the job has no stem {stem!r}; it has {sorted(job.result)}")
    if item.copied or item.key is None:
        raise error(Code.JOB_NOT_FOUND, f"{stem} was copied to custom storage, not kept here")
    filename = f"{stem}.{item.format}"
    path = jobs.blobs.local_path(item.key)
    if path is None:
        direct = jobs.blobs.public_url(item.key, jobs.result_ttl(job), filename, media_type(item.format))
        if direct is None:
            raise error(Code.JOB_NOT_FOUND, f"the file of {stem} is gone")
        raise web.HTTPFound(direct)  # shared storage serves it: the gateway is not in the download path
    return web.FileResponse(path, headers={"Content-Type": media_type(item.format),
                                           "Content-Disposition": f'attachment; filename="{filename}"',
                                           "Cache-Control": "private, max-age=3600"})


async def events(request: web.Request) -> web.StreamResponse:
    """The job's events; the stream holds one of the appkey's stream slots while it is open."""
    auth = authorized(request)
    with request.app[STREAMS].hold(auth.appkey, auth.quota):
        return await job_events(request, service(request), auth, request.match_info["job_id"])


def add_job_routes(app: web.Application) -> None:
    from .upload_routes import create_upload, put_upload

    router = app.router
    router.add_post("/api/v1/uploads", create_upload)
    router.add_put("/api/v1/uploads/{upload_id}", put_upload)
    router.add_post("/api/v1/jobs", submit_job)
    router.add_get("/api/v1/jobs", list_jobs)
    router.add_get("/api/v1/jobs/{job_id}", get_job)
    router.add_delete("/api/v1/jobs/{job_id}", delete_job)
    router.add_post("/api/v1/jobs/{job_id}/cancel", cancel_job)
    router.add_get("/api/v1/jobs/{job_id}/events", events)
    router.add_get("/api/v1/jobs/{job_id}/results/{stem}", job_result)
    router.add_get("/api/v1/models", list_models)
