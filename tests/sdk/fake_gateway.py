"""A small aiohttp server of the Jobs API contract, on loopback in a thread of its own, for the SDK's tests.

It keeps jobs in a dict and answers as the contract says; `script` queues answers for a route ahead of
the normal ones (a 503 with Retry-After, say), and `calls` records what the clients sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "fake-token"
FOUR = ["drums", "bass", "other", "vocals"]
MODELS: dict[str, Any] = {  # what `GET /api/v1/models` answers
    "default_model": "htdemucs",
    "models": [{"name": "htdemucs", "kind": "demucs", "description": "Hybrid Transformer Demucs (v4)",
                "sources": FOUR, "stems": FOUR + [f"no_{source}" for source in FOUR], "default_stems": FOUR},
               {"name": "2track_acc", "kind": "sami", "description": "SAMI's 2-track accompaniment model",
                "sources": ["vocals"], "stems": ["vocals", "no_vocals"], "default_stems": ["no_vocals"]}],
    "output": {"formats": ["wav", "flac", "mp3", "aac"], "default": {"format": "wav", "sample_rate": 44100,
                                                                      "channels": 2},
               "sample_rate_range": {"min": 8000, "max": 48000}, "sample_rates": {"mp3": [44100, 48000]},
               "channels": [1, 2]},
}


@dataclass(frozen=True)
class Seen:
    """One request as received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(http: int, code: int, text: str, message: str, **headers: str) -> Answer:
    body = {"error": {"status_code": code, "status_text": text, "message": message}, "request_id": "req-1"}
    return Answer(http, body, dict(headers))


class FakeGateway:
    """The server and its state; `url` is where it listens."""

    def __init__(self) -> None:
        self.url = ""
        self.jobs: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.events: dict[str, list[tuple[str, Any]]] = {}
        self.script: dict[tuple[str, str], list[Answer]] = defaultdict(list)
        self.calls: list[Seen] = []
        self.idempotency: dict[str, str] = {}
        self.polls_until_done: dict[str, int] = {}
        self.results_when_done: dict[str, Mapping[str, bytes | None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    # -- lifetime
    def start(self) -> FakeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- state
    def add_job(self, job_id: str, status: str = "succeeded", stems: Mapping[str, bytes | None] | None = None,
                **fields: Any) -> dict[str, Any]:
        """A job; each stem's bytes become a result file (None: a stem copied to custom storage)."""
        result = None if stems is None else self._results(job_id, stems)
        job = {"id": job_id, "name": None, "status": status, "progress": 100.0 if status == "succeeded" else 0.0,
               "model": "htdemucs", "stems": list(stems or ()), "output": {"format": "wav"}, "metadata": {},
               "input": None, "created_at": "2026-11-29T12:00:00Z", "started_at": None, "completed_at": None,
               "expires_at": None, "error": None, "result": result, **fields}
        self.jobs[job_id] = job
        return job

    def _results(self, job_id: str, stems: Mapping[str, bytes | None]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for stem, content in stems.items():
            if content is None:
                result[stem] = {"copied_to": "custom storage"}
                continue
            self.files[(job_id, stem)] = content
            result[stem] = {"url": f"{self.url}/signed/{job_id}/{stem}?sig=x", "format": "wav",
                            "size": len(content), "sha256": hashlib.sha256(content).hexdigest(), "duration": 1.5}
        return result

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [seen for seen in self.calls if seen.method == method and seen.path == path]

    # -- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.calls.append(seen)
        queued = self.script.get((request.method, request.path))
        if queued:
            return self._answer(queued.pop(0))
        if request.path.startswith(("/signed/", "/upload-put/")):
            return await self._unsigned(request, seen)
        if request.path == "/api/v1/invoke":
            return self._answer(self._invoke(seen))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(error_answer(401, 40200002, "DeniedAccess", "bad token"))
        if request.path.endswith("/events"):
            return await self._events(request)
        return self._answer(self._route(seen))

    @staticmethod
    def _answer(answer: Answer) -> web.Response:
        if answer.body is None:
            return web.Response(status=answer.status, headers=answer.headers)
        if isinstance(answer.body, bytes):
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)

    async def _unsigned(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        parts = request.path.split("/")
        if parts[1] == "upload-put":
            self.uploads[parts[2]] = seen.body
            return self._answer(Answer(200, {"upload_id": parts[2], "size": len(seen.body),
                                             "sha256": hashlib.sha256(seen.body).hexdigest()}))
        content = self.files.get((parts[2], parts[3]))
        if content is None:
            return self._answer(error_answer(404, 40400002, "NotFound", "no such file"))
        return self._answer(Answer(200, content))

    def _invoke(self, seen: Seen) -> Answer:
        body = json.loads(seen.body)
        if body.get("token") != TOKEN:
            return Answer(401, {"task_id": "t-1", "namespace": body.get("namespace"), "status_code": 40200002,
                                "status_text": "DeniedAccess:IllegalToken", "data": "", "payload": ""})
        return Answer(200, {"task_id": "t-1", "namespace": body["namespace"], "status_code": 20000000,
                            "status_text": "OK", "data": body.get("data", ""), "payload": body["payload"]})

    def _route(self, seen: Seen) -> Answer:
        parts = seen.path.strip("/").split("/")  # api v1 jobs [id [action [stem]]]
        if parts == ["api", "v1", "models"] and seen.method == "GET":
            return Answer(200, MODELS)
        if parts[:3] == ["api", "v1", "uploads"]:
            return Answer(201, {"upload_id": "upl-1", "upload_url": f"{self.url}/upload-put/upl-1?sig=x",
                                "expires_at": "2026-11-29T13:00:00Z", "max_bytes": 1 << 22})
        if len(parts) == 3:
            return self._create(seen) if seen.method == "POST" else self._list(seen)
        job = self.jobs.get(parts[3])
        if job is None:
            return error_answer(404, 40400002, "NotFound", f"no job {parts[3]}")
        if len(parts) == 4 and seen.method == "DELETE":
            del self.jobs[parts[3]]
            return Answer(204)
        if len(parts) == 4:
            return Answer(200, self._poll(job, seen))
        if parts[4] == "cancel":
            if job["status"] in ("queued", "processing"):
                job["status"] = "cancelled"
            return Answer(200, job)
        content = self.files.get((job["id"], parts[5]))
        if job["status"] != "succeeded" or content is None:
            return error_answer(409, 40900001, "Conflict", "the job has not succeeded")
        return Answer(200, content, {"Content-Type": "audio/wav"})

    def _create(self, seen: Seen) -> Answer:
        key = seen.headers.get("Idempotency-Key", "")
        if key in self.idempotency:
            return Answer(200, self.jobs[self.idempotency[key]])
        job_id = f"job-{len(self.jobs) + 1}"
        job = self.add_job(job_id, "queued", None, request=json.loads(seen.body))
        self.idempotency[key] = job_id
        return Answer(201, job, {"Location": f"/api/v1/jobs/{job_id}"})

    def _list(self, seen: Seen) -> Answer:
        wanted = set(seen.query["status"].split(",")) if "status" in seen.query else None
        jobs = [job for job in reversed(self.jobs.values()) if wanted is None or job["status"] in wanted]
        start = int(seen.query.get("cursor", "0"))
        limit = int(seen.query.get("limit", "50"))
        page = jobs[start:start + limit]
        more = start + limit < len(jobs)
        return Answer(200, {"jobs": page, "next_cursor": str(start + limit) if more else None})

    def _poll(self, job: dict[str, Any], seen: Seen) -> dict[str, Any]:
        """A job in polls_until_done advances a step per GET, and succeeds at the last."""
        left = self.polls_until_done.get(job["id"])
        if left is not None and job["status"] not in ("succeeded", "failed", "cancelled"):
            left -= 1
            self.polls_until_done[job["id"]] = left
            job["status"] = "processing" if left > 0 else "succeeded"
            job["progress"] = 100.0 if left <= 0 else min(99.0, job["progress"] + 25.0)
            if left <= 0 and job["id"] in self.results_when_done:
                job["result"] = self._results(job["id"], self.results_when_done[job["id"]])
        return job

    async def _events(self, request: web.Request) -> web.StreamResponse:
        job_id = request.path.split("/")[4]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": keep-alive\n\n")
        for number, (event, data) in enumerate(self.events.get(job_id, []), 1):
            await response.write(f"id: {number}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response
