"""The gateway's OpenAPI 3.1 document, built as data; its error answers come from the status tables."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from .. import __version__
from ..errors import Code, Status, status_table_markdown
from ..gettoken import ACTION, VERSION, OpenApiCode
from ..jobs.api.http import CURSOR_PATTERN
from ..jobs.views import PREFIXES as JOBS_PREFIXES
from .live import Accepted, narrowed
from .schemas import EXAMPLES, JOB_QUEUED, JOB_REQUESTS, JOB_STATUSES, JOB_SUCCEEDED, SCHEMAS, Schema, ref

JSON = "application/json"
OPENAPI_VERSION = "3.1.0"
Security = list[dict[str, list[str]]]
BEARER: Security = [{"bearerAuth": []}]
ANONYMOUS: Security = []

# Which rows of the table each family of routes answers.
ROUTING = (Code.NOT_FOUND, Code.METHOD_NOT_ALLOWED)  # any route: no such path, wrong method
JOBS_ONLY = (Code.FORBIDDEN, Code.JOB_NOT_FOUND, Code.CONFLICT, Code.PAYLOAD_TOO_LARGE, Code.UNSUPPORTED_MEDIA_TYPE,
             Code.IDEMPOTENCY_MISMATCH, Code.STORAGE_QUOTA_EXCEEDED)
INVOKE_CODES = tuple(code for code in Code
                     if code.value.http != 200 and code not in ROUTING and code not in JOBS_ONLY)
BAD_REQUEST = tuple(code for code in INVOKE_CODES if code.value.http == 400)
AUTH = (Code.INVALID_ACCESS, Code.DENIED_ACCESS)
SERVER = (Code.INTERNAL_ERROR, Code.UNAVAILABLE)
EXAMPLE_ID = "5c0e3f4e-8d0e-4b5e-9d3a-2f1d2b9c7a10"
QUOTA_EXAMPLE = {"exceeded": "bytes", "held": 5_800_000_000, "limit": 6_000_000_000}  # what a storage refusal adds
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "integer", "minimum": 0}}}


def _by_http(codes: Iterable[Code]) -> dict[int, list[Status]]:
    groups: dict[int, list[Status]] = {}
    for code in codes:
        groups.setdefault(code.value.http, []).append(code.value)
    return dict(sorted(groups.items()))


def _error_responses(codes: Iterable[Code], envelope: str, restrict: Callable[[list[int]], Schema],
                     example: Callable[[Status], Any]) -> dict[str, Any]:
    """One response per HTTP status: the envelope, its `status_code` limited to that status's rows."""
    responses: dict[str, Any] = {}
    for http, rows in _by_http(codes).items():
        response: dict[str, Any] = {
            "description": "; ".join(f"`{row.code}` {row.text}: {row.meaning}" for row in rows),
            "content": {JSON: {
                "schema": {"allOf": [ref(envelope), restrict([row.code for row in rows])]},
                "examples": {str(row.code): {"summary": f"{row.text}: {row.meaning}", "value": example(row)}
                             for row in rows},
            }},
        }
        if http in (429, 503):
            response["headers"] = RETRY_AFTER
        responses[str(http)] = response
    return responses


def sami_errors(*codes: Code) -> dict[str, Any]:
    """Error answers in the SAMI envelope (invoke, and every path outside the Jobs API)."""
    return _error_responses(
        codes, "InvokeError", lambda rows: {"properties": {"status_code": {"enum": rows}}},
        lambda row: {"task_id": EXAMPLE_ID, "namespace": "MusicSourceSeparate",
                     "status_code": row.code, "status_text": row.text})


def job_errors(*codes: Code) -> dict[str, Any]:
    """Error answers of the Jobs API: `{"error": {...}, "request_id": ...}`."""
    return _error_responses(
        codes, "Error",
        lambda rows: {"properties": {"error": {"properties": {"status_code": {"enum": rows}}}}},
        lambda row: {"error": {"status_code": row.code, "status_text": row.text, "message": row.meaning,
                               **({"quota": QUOTA_EXAMPLE} if row == Code.STORAGE_QUOTA_EXCEEDED.value else {})},
                     "request_id": EXAMPLE_ID})


def routing_error(code: Code) -> dict[str, Any]:
    """No such path, or the wrong method: in the SAMI envelope, or the Jobs API's JSON under its paths."""
    http = str(code.value.http)
    sami, jobs = sami_errors(code)[http]["content"][JSON], job_errors(code)[http]["content"][JSON]
    return {
        "description": f"{sami_errors(code)[http]['description']} (the Jobs API's error JSON under "
                       f"{' and '.join(f'`{prefix}`' for prefix in JOBS_PREFIXES)})",
        "content": {JSON: {"schema": {"anyOf": [sami["schema"], jobs["schema"]]}, "examples": {
            "sami": next(iter(sami["examples"].values())), "jobs": next(iter(jobs["examples"].values()))}}},
    }


def gettoken_errors() -> dict[str, Any]:
    """GetToken's answers in the Volcengine OpenAPI envelope, from `OpenApiCode`."""
    groups: dict[int, list[OpenApiCode]] = {}
    for kind in OpenApiCode:
        groups.setdefault(kind.value.http, []).append(kind)
    responses = {}
    for http, kinds in sorted(groups.items()):
        restrict = {"properties": {"ResponseMetadata": {"properties": {"Error": {"properties": {
            "CodeN": {"enum": [k.value.code_n for k in kinds]}, "Code": {"enum": [k.value.code for k in kinds]}}}}}}}
        examples = {k.value.code: {"value": {"ResponseMetadata": {
            "RequestId": EXAMPLE_ID, "Action": ACTION, "Version": VERSION,
            "Service": "sami", "Region": "cn-north-1",
            "Error": {"CodeN": k.value.code_n, "Code": k.value.code, "Message": k.value.code}}}} for k in kinds}
        responses[str(http)] = {
            "description": ", ".join(f"{k.value.code} ({k.value.code_n})" for k in kinds),
            "content": {JSON: {"schema": {"allOf": [ref("OpenApiError"), restrict]}, "examples": examples}}}
    return responses


def json_body(schema: Schema, description: str, example: Any = None, **extra: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {JSON: media}, **extra}


def param(name: str, where: str, schema: Schema, description: str = "", required: bool = False,
          **extra: Any) -> dict[str, Any]:
    out = {"name": name, "in": where, "schema": schema, "required": required or where == "path", **extra}
    return {**out, "description": description} if description else out


def operation(op_id: str, tag: str, summary: str, responses: dict[str, Any], *,
              security: Security | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary, "responses": responses}
    if security is not None:
        op["security"] = security
    return {**op, **extra}


def _sami_paths() -> dict[str, Any]:
    invoke = operation(
        "invoke", "SAMI", "Run a namespace on the input (SAMI invoke)", {
            "200": json_body(ref("InvokeReply"), "the result", EXAMPLES["InvokeReply"]),
            **sami_errors(*INVOKE_CODES)},
        security=ANONYMOUS,
        # The routing fields are described where Python and Node clients send them, the body. The
        # official Go SDK sends them as query parameters of the same names instead; a field sent in
        # both places must be equal, a rule between the query and the body that OpenAPI cannot state.
        description="Credentials travel as `appkey`/`token`, never in a header. `appkey`, `token`, "
                    "`namespace` and `version` go in the body as below, or as query parameters of the same "
                    "names (the official Go SDK sends them there); a field sent in both places must be equal "
                    "(else 400 `40000000`).",
        requestBody={"required": True, "content": {JSON: {
            "schema": ref("InvokeRequest"), "example": EXAMPLES["InvokeRequest"]}}})
    get_token = operation(
        "getToken", "SAMI", "Issue a SAMI token (Volcengine OpenAPI `GetToken`)", {
            "200": json_body(ref("GetTokenReply"), "a token", EXAMPLES["GetTokenReply"]), **gettoken_errors()},
        security=[{"volcengineV4": []}],
        parameters=[
            param("Action", "query", {"type": "string", "enum": [ACTION]}, required=True),
            param("Version", "query", {"type": "string", "enum": [VERSION]}, required=True),
            param("X-Date", "header", {"type": "string", "pattern": "^[0-9]{8}T[0-9]{6}Z$"}, "signing time, UTC"),
            param("X-Content-Sha256", "header", {"type": "string"}, "hex sha256 of the body")],
        requestBody={"required": True, "content": {JSON: {
            "schema": ref("GetTokenRequest"), "example": EXAMPLES["GetTokenRequest"]}}})
    return {"/api/v1/invoke": {"post": invoke}, "/": {"post": get_token}}


# The Swagger UI files /docs uses, from the installed package, with their types; no other file of the
# bundle is served.
SWAGGER_UI_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}


def _service_paths() -> dict[str, Any]:
    from ..ui.routes import ASSETS as UI_ASSETS

    text = {"type": "string"}
    return {
        "/healthz": {"get": operation("healthz", "Service", "Liveness", {
            "200": json_body(ref("Health"), "the event loop answers", {"status": "ok"})}, security=ANONYMOUS)},
        "/readyz": {"get": operation("readyz", "Service", "Readiness", {
            "200": json_body(ref("Readiness"), "ready", EXAMPLES["Readiness"]),
            "503": json_body(ref("Readiness"), "models not loaded, shutting down, saturated or the disk full",
                             {**EXAMPLES["Readiness"], "status": "unavailable", "admitting": False})},
            security=ANONYMOUS)},
        "/metrics": {"get": operation("metrics", "Service", "Prometheus metrics", {
            "200": {"description": "the text exposition format", "content": {"text/plain": {"schema": text}}}},
            security=ANONYMOUS)},
        "/openapi.json": {"get": operation("openapi", "Service", "This document", {
            "200": json_body({"type": "object", "required": ["openapi", "info", "paths"]}, "OpenAPI 3.1")},
            security=ANONYMOUS)},
        "/docs": {"get": operation("docs", "Service", "Swagger UI", {
            "200": {"description": "the page", "content": {"text/html": {"schema": text}}}}, security=ANONYMOUS)},
        "/docs/{asset}": {"get": operation(
            "docsAsset", "Service", "Swagger UI's files, as installed with the gateway", {
                "200": {"description": "the file", "content": {
                    media: {"schema": text} for media in sorted(set(SWAGGER_UI_FILES.values()))}},
                "404": {"$ref": "#/components/responses/NotFound"}},
            security=ANONYMOUS,
            parameters=[param("asset", "path", {"type": "string", "enum": sorted(SWAGGER_UI_FILES)})])},
        "/ui": {"get": operation("ui", "Service", "A page to separate a song in the browser", {
            "200": {"description": "the page; it calls the Jobs API with a token the person pastes",
                    "content": {"text/html": {"schema": text}}}}, security=ANONYMOUS)},
        "/ui/": {"get": operation("uiSlash", "Service", "Redirects to /ui", {
            "301": {"description": "to `/ui`, against which the page's relative URLs resolve"}},
            security=ANONYMOUS)},
        "/ui/{asset}": {"get": operation("uiAsset", "Service", "The page's files, as installed with the gateway", {
            "200": {"description": "the file", "content": {
                media: {"schema": text} for media in sorted(set(UI_ASSETS.values()))}},
            "404": {"$ref": "#/components/responses/NotFound"}},
            security=ANONYMOUS, parameters=[param("asset", "path", {"type": "string", "enum": sorted(UI_ASSETS)})])},
    }


def _upload_paths() -> dict[str, Any]:
    signed = [param("expires", "query", {"type": "integer"}, "unix seconds", required=True),
              param("signature", "query", {"type": "string", "pattern": "^[0-9a-f]+$"}, "hex", required=True)]
    create = operation(
        "createUpload", "Jobs", "Start a direct upload", {
            "201": json_body(ref("UploadTicket"), "PUT the file to `upload_url` before `expires_at`",
                             EXAMPLES["UploadTicket"]),
            **job_errors(*AUTH, Code.QUOTA_EXCEEDED, Code.STORAGE_QUOTA_EXCEEDED, *SERVER)}, security=BEARER,
        description="429 `42900002` when the appkey keeps as many uploads as `SAMI_MAX_UPLOADS_PER_APPKEY` allows, "
                    "or all the bytes of `SAMI_STORAGE_BYTES_PER_APPKEY`.")
    put = operation(
        "putUpload", "Jobs", "Send an upload's bytes to its signed URL", {
            "200": json_body(ref("UploadDone"), "stored", EXAMPLES["UploadDone"]),
            **job_errors(Code.CLIENT_ERROR, Code.EMPTY_DATA, Code.FORBIDDEN, Code.JOB_NOT_FOUND, Code.CONFLICT,
                         Code.BODY_TIMEOUT, Code.PAYLOAD_TOO_LARGE, Code.STORAGE_QUOTA_EXCEEDED, *SERVER)},
        security=ANONYMOUS, parameters=signed,
        description="No Authorization: the URL's signature allows it until `expires`. Once only (409 after). "
                    "429 `42900002` when the bytes would take the appkey past its storage quota (checked on "
                    "`Content-Length` before they are read, and on their size once stored; nothing is kept then: "
                    "the same URL may be PUT again).",
        requestBody={"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}})
    return {"/api/v1/uploads": {"post": create},
            "/api/v1/uploads/{upload_id}": {"parameters": [param("upload_id", "path", {"type": "string"})],
                                            "put": put}}


def _create_job() -> dict[str, Any]:
    location = {"Location": {"description": "`/api/v1/jobs/{id}`", "schema": {"type": "string"}}}
    return operation(
        "createJob", "Jobs", "Create a job", {
            "201": json_body(ref("Job"), "created", JOB_QUEUED, headers=location),
            "200": json_body(ref("Job"), "the job first created with this `Idempotency-Key`", JOB_QUEUED),
            **job_errors(*BAD_REQUEST, *AUTH, Code.JOB_NOT_FOUND, Code.CONFLICT, Code.BODY_TIMEOUT,
                         Code.UNSUPPORTED_MEDIA_TYPE, Code.IDEMPOTENCY_MISMATCH, Code.QUOTA_EXCEEDED,
                         Code.STORAGE_QUOTA_EXCEEDED, *SERVER, Code.OVERLOADED)},
        security=BEARER,
        description="JSON, or `multipart/form-data` with a `file` part and a `params` part (the same JSON "
                    "without `input`). 404: unknown upload; 409: an upload not yet PUT; 422: an "
                    "`Idempotency-Key` already used for a different request; 429 `42900002`: the appkey keeps "
                    "as many jobs as it may (`SAMI_MAX_STORED_JOBS_PER_APPKEY`), or the input does not fit its "
                    "bytes (`SAMI_STORAGE_BYTES_PER_APPKEY`; `error.quota` says which).",
        parameters=[param("Idempotency-Key", "header",
                          {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"},
                          "printable ASCII; the same key from the same appkey within 24 h with the same request "
                          "returns the first job (200), with a different request 422 `42200001`")],
        requestBody={"required": True, "content": {
            JSON: {"schema": ref("JobRequest"),
                   "examples": {name: {"value": value} for name, value in JOB_REQUESTS.items()}},
            "multipart/form-data": {"schema": ref("JobMultipart"),
                                    "encoding": {"params": {"contentType": JSON}}}}})


# One event of a stream (OpenAPI 3.1 reads a `text/event-stream` schema as the schema of each event,
# as 3.2's `itemSchema`): its fields as the HTML standard parses them, `data` a JSON text.
SSE_EVENT = {
    "type": "object", "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "progress", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "description": "increases by one per event"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _job_paths() -> dict[str, Any]:
    job_id = [param("job_id", "path", {"type": "string"})]
    a_status = f"\\s*(?:{'|'.join(JOB_STATUSES)})\\s*"
    # A comma-separated list as the wire has it: `status=` (empty) is every status, and so cannot be
    # told from a list of one empty name, which `status=a,` is refused as.
    statuses = {"type": "string", "pattern": f"^(?:{a_status}(?:,{a_status})*)?$"}
    listing = operation(
        "listJobs", "Jobs", "The caller's jobs, newest first", {
            "200": json_body(ref("JobList"), "a page", EXAMPLES["JobList"]),
            **job_errors(Code.ILLEGAL_PAYLOAD, *AUTH, *SERVER)},
        security=BEARER, parameters=[
            param("status", "query", statuses, "only these statuses, comma-separated (none or empty: all)"),
            param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}),
            param("cursor", "query", {"type": "string", "pattern": CURSOR_PATTERN},
                  "`next_cursor` of the previous page (none or empty: the first page)")])
    one = job_errors(*AUTH, Code.JOB_NOT_FOUND, *SERVER)
    get = operation(
        "getJob", "Jobs", "A job", {
            "200": json_body(ref("Job"), "the job", JOB_SUCCEEDED),
            **job_errors(Code.ILLEGAL_PAYLOAD, *AUTH, Code.JOB_NOT_FOUND, Code.QUOTA_EXCEEDED, *SERVER)},
        security=BEARER, parameters=[param(
            "wait", "query", {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
            "long polling: answer once the job is terminal, or after this many seconds; a long poll holds one "
            "of the appkey's stream slots (`SAMI_QUOTA_STREAMS`) while it waits, 429 past them")])
    delete = operation("deleteJob", "Jobs", "Cancel if needed, delete the job and its files",
                       {"204": {"description": "deleted"}, **one}, security=BEARER)
    cancel = operation("cancelJob", "Jobs", "Cancel a queued or processing job", {
        "200": json_body(ref("Job"), "the job (a terminal one unchanged)", JOB_SUCCEEDED), **one}, security=BEARER)
    events = operation("jobEvents", "Jobs", "Server-Sent Events until the job is terminal", {
        "200": {"description": "a `status` event (`data`: the job) first and at each change of status, "
                               "`progress` events (`data`: `{\"id\", \"progress\", \"ready\"}`, `ready` as the job's) "
                               "between; the stream "
                               "ends after the terminal status (`cancelled` for a job deleted meanwhile), or with "
                               "an `error` event (`data`: the error JSON, 40400002) for a job whose state was lost; "
                               "it holds one of the appkey's stream slots (`SAMI_QUOTA_STREAMS`, shared with long "
                               "polls) while open",
                "content": {"text/event-stream": {"schema": SSE_EVENT}}},
        **job_errors(*AUTH, Code.JOB_NOT_FOUND, Code.QUOTA_EXCEEDED, *SERVER)}, security=BEARER)
    return {
        "/api/v1/jobs": {"post": _create_job(), "get": listing},
        "/api/v1/jobs/{job_id}": {"parameters": job_id, "get": get, "delete": delete},
        "/api/v1/jobs/{job_id}/cancel": {"parameters": job_id, "post": cancel},
        "/api/v1/jobs/{job_id}/events": {"parameters": job_id, "get": events},
        "/api/v1/jobs/{job_id}/results/{stem}": {
            "parameters": [*job_id, param("stem", "path", {"type": "string"})], "get": _result()},
        "/api/v1/models": {"get": operation(
            "listModels", "Jobs", "What a job may ask for: the models that can run, their stems, the output", {
                "200": json_body(ref("ModelList"), "the listing", EXAMPLES["ModelList"]),
                **job_errors(Code.DENIED_NAMESPACE, *AUTH, *SERVER)},
            security=BEARER,
            description="Read from the model store on each call, so a model fetched or removed shows at once. "
                        "Every model listed, with any of its `stems`, is accepted by `POST /api/v1/jobs`. "
                        "400 DeniedNamespace when no namespace of the gateway runs jobs.")},
    }


def _result() -> dict[str, Any]:
    audio = {"audio/*": {"schema": {"type": "string", "contentMediaType": "audio/*"}}}
    file_headers = {name: {"schema": {"type": "string"}} for name in ("ETag", "Content-Length", "Content-Disposition")}
    return operation(
        "getResult", "Jobs", "A stem's file", {
            "200": {"description": "the file (or, while the job is processing, the stem as it is computed)",
                    "headers": file_headers, "content": audio},
            "206": {"description": "the range asked for", "content": audio,
                    "headers": {**file_headers, "Content-Range": {"schema": {"type": "string"}}}},
            "416": {"description": "a range outside the file (no body)",
                    "headers": {"Content-Range": {"schema": {"type": "string"}, "description": "`bytes */size`"}}},
            **job_errors(*AUTH, Code.FORBIDDEN, Code.JOB_NOT_FOUND, Code.CONFLICT, *SERVER)},
        security=[*BEARER, {}],
        description="With Bearer, or without Authorization on the signed URL of `result` (`expires` and "
                    "`signature`). While the job is `processing`, the stem as it is computed: chunked, without "
                    "Range or ETag, holding one of the appkey's stream slots, and ending with the finished "
                    "file's last byte (a wav or flac of a job that streams comes a MiB at a time, any other "
                    "once written); cut short, without the chunked body's end, if the job fails or is "
                    "cancelled. 409 while queued or once failed or cancelled; 404 for a stem it does not have "
                    "or copied to custom storage.",
        parameters=[param("expires", "query", {"type": "integer"}, "unix seconds (signed URL)"),
                    param("signature", "query", {"type": "string", "pattern": "^[0-9a-f]+$"}, "hex (signed URL)"),
                    param("Range", "header", {"type": "string"}, "`bytes=start-end`")])


def _webhooks() -> dict[str, Any]:
    headers = [param("Sami-Event-Id", "header", {"type": "string"}, "the event's id", required=True),
               param("Sami-Signature", "header", {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"},
                     "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\" with the webhook secret>`",
                     required=True)]
    return {"jobEnded": {"post": {
        "operationId": "jobEnded", "summary": "A job ended (POSTed to its `webhook_url`)",
        "description": "Retried after about 10 s, 30 s, 1 min, 5 min, 15 min, then hourly for at least 24 h, "
                       "until one attempt is answered 2xx within 10 s.",
        "parameters": headers,
        "requestBody": {"required": True, "content": {JSON: {"schema": ref("WebhookEvent"),
                                                             "example": EXAMPLES["WebhookEvent"]}}},
        "responses": {"2XX": {"description": "delivered"}},
    }}}


def components(accepted: Accepted | None = None) -> dict[str, Any]:
    schemas = SCHEMAS if accepted is None else narrowed(SCHEMAS, accepted)
    return {
        "schemas": copy.deepcopy(schemas),
        "responses": {
            "NotFound": routing_error(Code.NOT_FOUND),
            "MethodNotAllowed": {**routing_error(Code.METHOD_NOT_ALLOWED), "headers": {
                "Allow": {"description": "the methods the path takes", "schema": {"type": "string"}}}},
        },
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "the token invoke accepts (GetToken or `sami-gateway token`); "
                                          "its appkey owns the jobs and uploads it creates"},
            "volcengineV4": {"type": "apiKey", "in": "header", "name": "Authorization",
                             "description": "Volcengine V4: `HMAC-SHA256 Credential=AK/date/cn-north-1/sami/"
                                            "request, SignedHeaders=..., Signature=...` with `X-Date`"},
        },
    }


def _description() -> str:
    gettoken = "\n".join(f"| {k.value.http} | {k.value.code_n} | {k.value.code} |" for k in OpenApiCode)
    return (
        "A SAMI-compatible music source separation gateway: SAMI invoke and GetToken, and the Jobs API "
        "(asynchronous jobs, direct uploads, signed result URLs, webhooks).\n\n"
        "Errors are JSON: the SAMI envelope, except under "
        f"{' and '.join(f'`{prefix}`' for prefix in JOBS_PREFIXES)}, where they are "
        "`{\"error\": {...}, \"request_id\": ...}` with the same codes. The status table:\n\n"
        f"{status_table_markdown()}\n\nGetToken's errors (`ResponseMetadata.Error`):\n\n"
        f"| HTTP | CodeN | Code |\n|---|---|---|\n{gettoken}\n")


def build_document(accepted: Accepted | None = None) -> dict[str, Any]:
    """The whole document, a new copy each call; with `accepted`, a gateway's own, whose job requests
    name only what it accepts now."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "sami-gateway", "version": __version__, "description": _description(),
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [{"name": "SAMI", "description": "SAMI's own protocol"},
                 {"name": "Jobs", "description": "asynchronous jobs and direct uploads"},
                 {"name": "Service", "description": "health, metrics and this documentation"}],
        "paths": {**_sami_paths(), **_upload_paths(), **_job_paths(), **_service_paths()},
        "webhooks": _webhooks(),
        "components": components(accepted),
    }


@cache
def document() -> dict[str, Any]:
    """The document, built once (shared: do not change it)."""
    return build_document()


def schema(name: str) -> Schema:
    """A component schema as a self-contained JSON Schema (2020-12), for validating values."""
    if name not in SCHEMAS:
        raise KeyError(f"no component schema {name!r}")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"#/components/schemas/{name}",
            "components": {"schemas": copy.deepcopy(SCHEMAS)}}

