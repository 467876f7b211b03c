"""`GET /api/v1/jobs/{id}/events`: the job's status and progress as Server-Sent Events.

The stream opens with a `status` event carrying the whole job, sends `progress` events as the
job advances and a `status` event at each change of status, and ends after the terminal one. A
job deleted meanwhile ends it with a `cancelled` status; one whose state was lost (scale-out: Redis
restarted empty) with an `error` event, the Jobs API's error JSON for a 404. A comment line every
few seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ...auth.authenticator import Authorization
from ...errors import Code, GatewayError, error
from ...web.state import CONTEXT
from ..model import Job
from ..service import JobService
from ..views import error_body, ready_seconds
from .http import base_url

HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps proxies from closing the stream; the job is read again
LOST = "the job is no longer known (its state was lost)"


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def _vanished(request: web.Request, jobs: JobService, last: Job, base: str) -> tuple[str, Any]:
    """The last event for a job that is gone: deleted, it ended cancelled; lost, nobody cancelled it."""
    if await jobs.store.was_deleted(last.id):
        return "status", {**jobs.render(last, base), "status": "cancelled"}
    return "error", error_body(request[CONTEXT].task_id, error(Code.JOB_NOT_FOUND, LOST))


async def job_events(request: web.Request, jobs: JobService, auth: Authorization, job_id: str) -> web.StreamResponse:
    job = await jobs.owned(auth, job_id)  # 404 before the stream starts
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    base = base_url(request)
    count = 0

    async def send(event: str, data: Any) -> None:
        nonlocal count
        count += 1
        await response.write(sse(event, data, count))

    try:
        await send("status", jobs.render(job, base))
        last: Job = job
        while not last.status.terminal:
            seen = jobs.events.version(job_id)
            changed = await jobs.events.wait(job_id, seen, HEARTBEAT_SECONDS)
            if not changed:
                await response.write(b": keep-alive\n\n")
            try:
                current = await jobs.store.get_job(job_id)  # at a keep-alive too: a job lost sends no change
            except GatewayError:
                if changed:
                    raise
                continue  # the store away for now: the stream waits for it
            if current is None:
                await send(*await _vanished(request, jobs, last, base))
                break
            if current.status is not last.status:
                await send("status", jobs.render(current, base))
            elif current.progress > last.progress:
                await send("progress", {"id": job_id, "progress": round(current.progress, 2),
                                        "ready": ready_seconds(current)})
            last = current
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
