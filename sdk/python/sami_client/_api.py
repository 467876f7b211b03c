"""The gateway's routes as Calls: what each method sends and how its answer is read (no I/O here)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ._http import Call
from .errors import error_from_answer
from .models import InvokeResult, Job, JobPage, ModelList, Upload
from .signer import sign_request

INVOKE_PATH = "/api/v1/invoke"
JOBS_PATH = "/api/v1/jobs"
UPLOADS_PATH = "/api/v1/uploads"
MODELS_PATH = "/api/v1/models"
GETTOKEN_QUERY = "Action=GetToken&Version=2021-07-27"
TOKEN_VERSION = "volc-auth-v1"
OK = 20000000  # SAMI's status_code of success
MAX_LONG_POLL = 60  # the longest `?wait=` the gateway honours, in seconds
LONG_POLL_MARGIN = 30.0  # seconds of read timeout beyond a long poll's wait

Params = dict[str, str]


def _json(response: httpx.Response) -> Any:
    return response.json()


def _job(response: httpx.Response) -> Job:
    return Job.from_dict(response.json())


def _nothing(response: httpx.Response) -> None:
    return None


def job_path(job_id: str, *rest: str) -> str:
    return "/".join([JOBS_PATH, quote(job_id, safe=""), *(quote(part, safe="") for part in rest)])


def get_token(base_url: str, access_key: str, secret_key: str, appkey: str, expiration: int,
              region: str, service: str) -> Call[str]:
    """GetToken (`POST /?Action=GetToken&Version=2021-07-27`), V4-signed; parses to the token."""
    url = f"{base_url.rstrip('/')}/?{GETTOKEN_QUERY}"
    body = json.dumps({"token_version": TOKEN_VERSION, "appkey": appkey, "expiration": expiration},
                      separators=(",", ":")).encode()
    headers = sign_request("POST", url, body, access_key, secret_key, region=region, service=service)

    def parse(response: httpx.Response) -> str:
        answer = response.json()
        if not isinstance(answer, dict) or answer.get("status_code") != OK or not answer.get("token"):
            raise error_from_answer(response.status_code, response.content, response.headers)
        return str(answer["token"])

    return Call("POST", url, parse, content=body, headers=headers, idempotent=False, auth=False)


def invoke(appkey: str, namespace: str, token: str | None, data: bytes | None, url: str | None,
           payload: Mapping[str, Any] | None, retries: int | None) -> Call[InvokeResult]:
    """SAMI invoke: everything in the JSON body, `payload` as a JSON string, `data` as padded base64."""
    fields = dict(payload or {})
    if url is not None:
        fields["url"] = url
    body: dict[str, Any] = {"appkey": appkey, "token": token or "", "namespace": namespace,
                            "payload": json.dumps(fields)}
    if data is not None:
        body["data"] = base64.b64encode(data).decode("ascii")

    def parse(response: httpx.Response) -> InvokeResult:
        answer = response.json()
        if not isinstance(answer, dict) or answer.get("status_code") != OK:
            raise error_from_answer(response.status_code, response.content, response.headers)
        text = answer.get("payload")
        return InvokeResult(task_id=str(answer.get("task_id") or ""), namespace=str(answer.get("namespace") or ""),
                            data=base64.b64decode(answer.get("data") or ""),
                            payload=json.loads(text) if isinstance(text, str) and text else text,
                            status_code=OK, status_text=str(answer.get("status_text") or "OK"), raw=answer)

    return Call("POST", INVOKE_PATH, parse, json=body, idempotent=False, auth=False, retries=retries)


def create_upload() -> Call[Upload]:
    """A new upload slot; a slot asked for twice is only an unused slot, so retrying is safe."""
    def parse(response: httpx.Response) -> Upload:
        answer = response.json()
        return Upload(upload_id=str(answer["upload_id"]), upload_url=str(answer["upload_url"]),
                      expires_at=answer.get("expires_at"), max_bytes=answer.get("max_bytes"))

    return Call("POST", UPLOADS_PATH, parse)


def put_upload(slot: Upload, size: int, body: Any) -> Call[Upload]:
    """PUT the bytes to the slot's signed URL (no Authorization); `body()` streams them, once per attempt."""
    def parse(response: httpx.Response) -> Upload:
        answer = response.json() if response.content else {}
        return Upload(upload_id=str(answer.get("upload_id") or slot.upload_id), upload_url=slot.upload_url,
                      expires_at=slot.expires_at, max_bytes=slot.max_bytes,
                      size=answer.get("size", size), sha256=answer.get("sha256"))

    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    return Call("PUT", str(slot.upload_url), parse, body=body, headers=headers, auth=False)


def submit(body: Mapping[str, Any], idempotency_key: str | None) -> Call[Job]:
    """POST /api/v1/jobs with an Idempotency-Key (one is made if none is given), so it is safe to retry."""
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    return Call("POST", JOBS_PATH, _job, json=dict(body), headers=headers)


def get(job_id: str, wait: float | None, timeout: float) -> Call[Job]:
    params: Params = {}
    long_poll: float | None = None
    if wait is not None and wait > 0:
        seconds = min(MAX_LONG_POLL, max(1, round(wait)))
        params["wait"] = str(seconds)
        long_poll = seconds + max(timeout, LONG_POLL_MARGIN)
    return Call("GET", job_path(job_id), _job, params=params or None, timeout=long_poll)


def list_jobs(status: str | Iterable[str] | None, limit: int | None, cursor: str | None) -> Call[JobPage]:
    params: Params = {}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if limit is not None:
        params["limit"] = str(limit)
    if cursor:
        params["cursor"] = cursor
    return Call("GET", JOBS_PATH, lambda response: JobPage.from_dict(response.json()), params=params or None)


def models() -> Call[ModelList]:
    return Call("GET", MODELS_PATH, lambda response: ModelList.from_dict(response.json()))


def cancel(job_id: str) -> Call[Job]:
    """Cancelling twice is cancelling once (a terminal job is returned unchanged): retried like a GET."""
    return Call("POST", job_path(job_id, "cancel"), _job)


def delete(job_id: str) -> Call[None]:
    return Call("DELETE", job_path(job_id), _nothing)


def result(job_id: str, stem: str) -> Call[None]:
    """The result file of one stem (Bearer), to be streamed."""
    return Call("GET", job_path(job_id, "results", stem), _nothing)


def signed_result(url: str) -> Call[None]:
    """A result file by its signed URL (no Authorization), to be streamed."""
    return Call("GET", url, _nothing, auth=False)


def events(job_id: str, connect_timeout: float) -> Call[None]:
    """The job's Server-Sent Events: no read timeout, the stream is quiet between events."""
    return Call("GET", job_path(job_id, "events"), _nothing, headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(connect_timeout, read=None))


@dataclass(frozen=True)
class JobRequest:
    """What `submit` was asked for: the job's JSON, except that a local `file` is still to be uploaded."""

    body: dict[str, Any]
    file: Path | None = None


def _input(input: Any, file: str | os.PathLike[str] | None, url: str | None, upload_id: str | None,
           data: bytes | None) -> tuple[dict[str, Any], Path | None]:
    given = [name for name, value in (("input", input), ("file", file), ("url", url), ("upload_id", upload_id),
                                      ("data", data)) if value is not None]
    if len(given) != 1:
        raise ValueError("give exactly one input: input, file, url, upload_id or data"
                         + (f" (got {', '.join(given)})" if given else ""))
    if isinstance(input, Mapping):
        return dict(input), None
    if isinstance(input, bytes | bytearray | memoryview):
        data = bytes(input)
    elif isinstance(input, str) and input.startswith(("http://", "https://")):
        url = input
    elif input is not None:
        file = input
    if file is not None:
        return {}, Path(file)
    if url is not None:
        return {"url": url}, None
    if upload_id is not None:
        return {"upload_id": upload_id}, None
    return {"data": base64.b64encode(data or b"").decode("ascii")}, None


def job_request(input: Any, *, file: str | os.PathLike[str] | None, url: str | None, upload_id: str | None,
                data: bytes | None, model: str | None, stems: str | Iterable[str] | None,
                output: str | Mapping[str, Any] | None, name: str | None, metadata: Mapping[str, Any] | None,
                webhook_url: str | None, copy_results_to: Mapping[str, str] | None) -> JobRequest:
    """The JSON body of POST /api/v1/jobs from `submit`'s arguments; only given fields are sent."""
    source, path = _input(input, file, url, upload_id, data)
    body: dict[str, Any] = {"input": source}
    if isinstance(stems, str):
        stems = [stem.strip() for stem in stems.split(",") if stem.strip()]
    optional = {
        "model": model, "stems": None if stems is None else list(stems),
        "output": {"format": output} if isinstance(output, str) else None if output is None else dict(output),
        "name": name, "metadata": None if metadata is None else dict(metadata), "webhook_url": webhook_url,
        "copy_results_to": None if copy_results_to is None else dict(copy_results_to),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return JobRequest(body, path)
