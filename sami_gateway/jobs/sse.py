"""`GET /api/v1/jobs/{id}/events`: the job's status and progress as Server-Sent Events.

The stream opens with a `status` event carrying the whole job, sends `progress` events as the
job advances and a `status` event at each change of status, and ends after the terminal one.
A comment line every few seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..auth import Authorization
from .http import base_url
from .model import Job
from .service import JobService

HEARTBEAT_SECONDS = 15.0


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


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
            if not await jobs.events.wait(job_id, seen, HEARTBEAT_SECONDS):
                await response.write(b": keep-alive\n\n")
                continue
            current = await jobs.store.get_job(job_id)
            if current is None:  # deleted
                await send("status", {**jobs.render(last, base), "status": "cancelled"})
                break
            if current.status is not last.status:
                await send("status", jobs.render(current, base))
            elif current.progress > last.progress:
                await send("progress", {"id": job_id, "progress": round(current.progress, 2)})
            last = current
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
