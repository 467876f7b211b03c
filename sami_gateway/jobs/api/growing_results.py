"""`GET /api/v1/jobs/{id}/results/{stem}` of a job still `processing`: the stem as it is written (`growing.follow`),
chunked, ending with the finished file's last byte. A stem that will not be finished as it began (the job
failed, was cancelled or taken over) ends without the chunked body's end, so a client sees it cut short.
The response holds one of the appkey's stream slots while it is open."""

from __future__ import annotations

import contextlib

from aiohttp import web

from ...errors import Code, error
from ...web.state import AUTH, STREAMS
from ..growing import StemCutOff, follow
from ..model import Job, media_type
from ..service import JobService


async def growing_result(request: web.Request, jobs: JobService, job: Job, stem: str) -> web.StreamResponse:
    stems = list(job.request.get("stems") or ())
    if stem not in stems:
        raise error(Code.JOB_NOT_FOUND, f"the job has no stem {stem!r}; it has {sorted(stems)}")
    if stem in job.copy_results_to:
        raise error(Code.JOB_NOT_FOUND, f"{stem} is copied to custom storage, not kept here")
    output = job.request.get("output")
    fmt = str(output.get("format", "")) if isinstance(output, dict) else ""
    seen = jobs.events.version(job.id)

    async def current() -> Job | None:
        nonlocal seen
        seen = jobs.events.version(job.id)
        return await jobs.store.get_job(job.id)

    async def changed(timeout: float) -> object:
        return await jobs.events.wait(job.id, seen, timeout)

    with request.app[STREAMS].hold(job.appkey, request.app[AUTH].quota_of(job.appkey)):
        filename = f"{stem}.{fmt}" if fmt else stem
        response = web.StreamResponse(headers={
            "Content-Type": media_type(fmt), "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async with contextlib.aclosing(follow(jobs.blobs, job, stem, current, changed)) as chunks:
                async for chunk in chunks:  # a client gone mid-stem closes the reads (a file, an S3 body) now
                    await response.write(chunk)
        except StemCutOff:
            if request.transport is not None:
                request.transport.close()  # no end of the chunked body: the client sees the stem cut short
            return response
        await response.write_eof()
        return response
