"""The OpenAPI document's component schemas: the JSON shape of every request and answer, as data."""

from __future__ import annotations

from typing import Any

from ..jobs.requests import MAX_COPIES, MAX_NAME_CHARS
from ..runtime.namespace import MAX_JOB_STEMS

Schema = dict[str, Any]

DATE_TIME: Schema = {"type": "string", "format": "date-time"}
OUTPUT_FORMATS = ["wav", "flac", "mp3", "aac", "m4a"]
JOB_STATUSES = ["queued", "processing", "succeeded", "failed", "cancelled"]
WEBHOOK_TYPES = ["job.succeeded", "job.failed", "job.cancelled"]
# An http(s) URL with a host name or address, an optional port and anything after: the URLs the gateway
# accepts for `input.url`, `webhook_url` and `copy_results_to` include these (where one may lead is
# checked when it is used). A pattern rather than `format: uri`, which also admits `mailto:x` or `a:b`;
# host names in ASCII letters, digits, dots and hyphens, no `xn--` label.
HTTP_URL = ("^[Hh][Tt][Tt][Pp][Ss]?://(?!(?:[A-Za-z0-9-]*[.])*[Xx][Nn]--)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
            "(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
            "(?:[/?#][!-~]*)?$")
# Standard padded base64 (RFC 4648 section 4) of at least one byte, its padding bits zero: what
# `data` is decoded as.
BASE64 = ("^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|"
          "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)$")


def ref(name: str) -> Schema:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def closed(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """An object with exactly these properties (those in `required`, all of them by default)."""
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False, **extra}


_INVOKE: dict[str, Schema] = {
    "InvokeRequest": {
        "type": "object",
        "description": "The SAMI envelope. `appkey`, `token`, `namespace` and `version` may come in the query "
                       "instead; given in both places they must be equal.",
        "properties": {
            "appkey": {"type": "string"},
            "token": {"type": "string", "description": "a token from GetToken or `sami-gateway token`"},
            "namespace": {"type": "string", "examples": ["MusicSourceSeparate"]},
            "version": {"type": "string", "enum": ["v4"]},
            "data": {"type": "string", "contentEncoding": "base64",
                     "description": "the input bytes, standard padded base64 (RFC 4648)"},
            "payload": {"type": "string", "contentMediaType": "application/json",
                        "description": "the namespace's parameters: a JSON object serialised into a string"},
        },
    },
    "InvokeReply": {
        "type": "object",
        "required": ["task_id", "namespace", "status_code", "status_text", "payload"],
        "properties": {
            "task_id": {"type": "string"},
            "namespace": {"type": "string"},
            "status_code": {"type": "integer", "const": 20000000},
            "status_text": {"type": "string", "const": "OK"},
            "payload": {"type": "string", "contentMediaType": "application/json",
                        "description": "the namespace's text results: a JSON object serialised into a string"},
            "data": {"type": "string", "contentEncoding": "base64",
                     "description": "the result bytes, standard padded base64"},
        },
    },
    "InvokeError": {
        "type": "object",
        "description": "Every invoke failure: the envelope without `data` or `payload`.",
        "required": ["task_id", "namespace", "status_code", "status_text"],
        "properties": {
            "task_id": {"type": "string"},
            "namespace": {"type": "string"},
            "status_code": {"type": "integer", "description": "a row of the status table"},
            "status_text": {"type": "string", "description": "`Name` or `Name:detail`"},
        },
    },
}

_GETTOKEN: dict[str, Schema] = {
    "GetTokenRequest": {
        "type": "object",
        "required": ["appkey"],
        "properties": {
            "token_version": {"type": "string", "enum": ["volc-auth-v1", ""]},
            "appkey": {"type": "string", "minLength": 1},
            "expiration": {"type": "integer", "minimum": 1, "default": 3600,
                           "description": "seconds; capped at one day"},
        },
    },
    "GetTokenReply": {
        "type": "object",
        "required": ["status_code", "status_text", "task_id", "token", "expires_at"],
        "properties": {
            "status_code": {"type": "integer", "const": 20000000},
            "status_text": {"type": "string", "const": "OK"},
            "task_id": {"type": "string"},
            "token": {"type": "string"},
            "expires_at": {"type": "integer", "description": "unix seconds"},
        },
    },
    "OpenApiError": {
        "type": "object",
        "description": "The Volcengine OpenAPI error envelope.",
        "required": ["ResponseMetadata"],
        "properties": {"ResponseMetadata": {
            "type": "object",
            "required": ["RequestId", "Action", "Version", "Service", "Region", "Error"],
            "properties": {
                "RequestId": {"type": "string"}, "Action": {"type": "string"}, "Version": {"type": "string"},
                "Service": {"type": "string"}, "Region": {"type": "string"},
                "Error": {"type": "object", "required": ["CodeN", "Code", "Message"], "properties": {
                    "CodeN": {"type": "integer"}, "Code": {"type": "string"}, "Message": {"type": "string"}}},
            },
        }},
    },
}

_SERVICE: dict[str, Schema] = {
    "Health": closed({"status": {"type": "string", "const": "ok"}}),
    "Readiness": closed({
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "models_loaded": {"type": "boolean"},
        "admitting": {"type": "boolean"},
        "requests": {"type": "integer", "minimum": 0, "description": "requests admitted by the scheduler"},
        "queued_audio_seconds": {"type": "number", "minimum": 0},
        "held_bytes": {"type": "integer", "minimum": 0,
                       "description": "memory the admitted invokes hold, as each counts it (SAMI_MAX_HELD_BYTES)"},
        "disk": {"type": "boolean", "description": "the single process: its data folder has room for new files"},
        "disk_free_bytes": {"type": "integer", "minimum": 0},
        "redis": {"type": "boolean", "description": "a scale-out front: Redis answers"},
        "storage": {"type": "boolean", "description": "a scale-out front: the object storage answers"},
        "workers_alive": {"type": "integer", "minimum": 0, "description": "a scale-out front: workers heard from"},
    }, required=["status", "models_loaded", "admitting", "requests", "queued_audio_seconds",
                 "held_bytes"]),
}

_NAMES: Schema = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_OUTPUT_FIELDS: dict[str, Schema] = {
    "format": {"type": "string", "enum": OUTPUT_FORMATS},
    "sample_rate": {"type": "integer", "minimum": 1},
    "channels": {"type": "integer", "minimum": 1, "maximum": 2},
}
URL_STRING: Schema = ref("HttpUrl")

# What a job request may ask for; `null` (and for `model` and `output.format` the empty string) means
# the default, as the gateway reads it. A gateway's own /openapi.json narrows `model`, `stems`,
# `copy_results_to` and `output` to what its job namespace runs (`openapi_live.py`).
_OUTPUT_REQUEST_FIELDS: dict[str, Schema] = {
    "format": {"enum": [*OUTPUT_FORMATS, "", None], "description": "any case; empty or null: `wav`"},
    "sample_rate": nullable(_OUTPUT_FIELDS["sample_rate"]),
    "channels": nullable(_OUTPUT_FIELDS["channels"]),
}
STEMS_REQUEST: Schema = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_JOB_STEMS}
COPIES_REQUEST: Schema = {"type": "object", "additionalProperties": URL_STRING, "maxProperties": MAX_COPIES}
_JOB_PARAMS: dict[str, Schema] = {
    "model": nullable({"type": "string", "description": "a Demucs model of the store or a SAMI model name; "
                                                        "empty or null: the configured default",
                       "examples": ["htdemucs_ft"]}),
    "stems": nullable({**STEMS_REQUEST, "description": "sources of the model and `no_<source>`, each any number "
                                                       "of times; null: every source"}),
    "output": nullable(ref("OutputRequest")),
    "name": nullable({"type": "string", "maxLength": MAX_NAME_CHARS}),
    "metadata": nullable({"type": "object", "description": "returned as given (at most 4 KiB of JSON, objects and "
                                                           "arrays at most 32 deep)"}),
    "webhook_url": nullable({**URL_STRING, "description": "where terminal events are POSTed; 400 for an appkey "
                                                          "without a webhook secret"}),
    "copy_results_to": nullable({**COPIES_REQUEST, "description": "stem -> URL to PUT that stem's file to, instead "
                                                                  "of keeping it here; only stems the job makes"}),
}

_JOB_INPUTS: dict[str, Schema] = {
    "InputUrl": closed({"url": URL_STRING}, description="fetched under the `payload.url` rules"),
    "InputUpload": closed({"upload_id": {"type": "string", "minLength": 1}},
                          description="a completed direct upload"),
    "InputData": closed({"data": {"type": "string", "contentEncoding": "base64", "pattern": BASE64}},
                        description="the bytes (at least one), standard padded base64"),
}

_JOBS: dict[str, Schema] = {
    **_JOB_INPUTS,
    "HttpUrl": {"type": "string", "pattern": HTTP_URL,
                "description": "an http(s) URL; where it may lead is checked when it is used"},
    "OutputRequest": {"type": "object", "properties": _OUTPUT_REQUEST_FIELDS, "additionalProperties": False,
                      "description": "default `{\"format\": \"wav\", \"sample_rate\": 44100, \"channels\": 2}`"},
    "Output": closed(_OUTPUT_FIELDS),
    "JobParams": {"type": "object", "properties": _JOB_PARAMS, "additionalProperties": False,
                  "description": "a job request without `input` (the `params` part of a multipart request)"},
    "JobRequest": {"type": "object", "required": ["input"], "additionalProperties": False,
                   "properties": {"input": {"oneOf": [ref(name) for name in _JOB_INPUTS]}, **_JOB_PARAMS}},
    "JobMultipart": closed({
        "file": {"type": "string", "contentMediaType": "audio/*",
                 "description": "the input audio (its bytes as they are, any format invoke reads)"},
        "params": ref("JobParams"),
    }, ["file"], description="exactly these parts: any other is refused"),
    "InputInfo": {"type": "object", "required": ["format", "sample_rate", "channels", "duration"], "properties": {
        "format": {"type": "string"}, "sample_rate": {"type": "integer"}, "channels": {"type": "integer"},
        "duration": {"type": "number", "description": "seconds"}}},
    "ErrorDetail": {"type": "object", "required": ["status_code", "status_text", "message"], "properties": {
        "status_code": {"type": "integer", "description": "a row of the status table"},
        "status_text": {"type": "string"}, "message": {"type": "string"},
        "quota": closed({
            "exceeded": {"type": "string", "enum": ["bytes", "uploads", "jobs"],
                         "description": "what is full: the bytes of uploads and of jobs' inputs and results, "
                                        "the uploads kept, or the jobs kept"},
            "held": {"type": "integer", "minimum": 0, "description": "how much of it the appkey holds"},
            "limit": {"type": "integer", "minimum": 1, "description": "the most it may hold"},
        }, description="only on 42900002 StorageQuotaExceeded")}},
    "ResultFile": closed({
        "url": {"type": "string", "description": "a signed URL that works without Authorization until it expires"},
        "format": {"type": "string"},
        "size": {"type": "integer", "minimum": 0, "description": "bytes"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "duration": {"type": "number", "description": "seconds"},
    }),
    "ResultCopied": closed({"copied_to": {"type": "string", "const": "custom storage"}},
                           description="a stem PUT to the caller's `copy_results_to` URL"),
    "Job": closed({
        "id": {"type": "string"},
        "name": nullable({"type": "string"}),
        "status": {"type": "string", "enum": JOB_STATUSES},
        "progress": {"type": "number", "minimum": 0, "maximum": 100, "description": "only grows"},
        "ready": nullable({"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                           "description": "while the job is processing: stem -> seconds of it computed so far "
                                          "(a job separated span by span advances them together; a whole-song "
                                          "one gives each stem its length once written); null otherwise"}),
        "model": {"type": "string"},
        "stems": {"type": "array", "items": {"type": "string"}},
        "output": ref("Output"),
        "metadata": {"type": "object"},
        "input": nullable(ref("InputInfo")),
        "created_at": DATE_TIME,
        "started_at": nullable(DATE_TIME),
        "completed_at": nullable(DATE_TIME),
        "expires_at": nullable({**DATE_TIME, "description": "when the job and its files are deleted"}),
        "error": nullable(ref("ErrorDetail")),
        "result": nullable({"type": "object", "description": "stem -> its file",
                            "additionalProperties": {"oneOf": [ref("ResultFile"), ref("ResultCopied")]}}),
        "streams": nullable({"type": "object", "additionalProperties": {"type": "string"},
                             "description": "while the job is processing: stem -> a signed URL that sends "
                                            "the stem as it is computed, to the finished file's end"}),
        "cache_hit": {"type": "boolean", "description": "the stems came from the cache of this appkey's earlier runs "
                      "(of every appkey's with SAMI_STEM_CACHE_SHARED)"},
        "webhook_url": nullable({"type": "string"}),
    }),
    "JobList": closed({
        "jobs": {"type": "array", "items": ref("Job"), "description": "newest first"},
        "next_cursor": nullable({"type": "string"}),
    }),
    "UploadTicket": closed({
        "upload_id": {"type": "string"},
        "upload_url": {"type": "string", "description": "PUT the bytes here; signed, no Authorization needed"},
        "expires_at": {**DATE_TIME, "description": "the upload URL's expiry"},
        "max_bytes": {"type": "integer", "minimum": 1},
    }),
    "UploadDone": closed({
        "upload_id": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    }),
    "JobModel": closed({
        "name": {"type": "string", "description": "what a job's `model` names"},
        "kind": {"type": "string", "description": "`demucs`: a model of the store; `family`: a model of the store "
                                                  "imported from an MSST checkpoint; `sami`: a SAMI model name, "
                                                  "its stems built as invoke builds them", "examples": ["demucs"]},
        "description": {"type": "string"},
        "sources": _NAMES,
        "stems": {**_NAMES, "description": "what a job's `stems` may name (any of them, in any order): each "
                                           "source and `no_<source>`, the mix minus it"},
        "default_stems": {**_NAMES, "description": "what a job that names no `stems` gets"},
        "family": {"type": "string", "description": "`family` models: bs_roformer, mel_band_roformer or mdx23c"},
        "licence": {"type": "string", "description": "`family` models: the licence given at import"},
        "sample_rate": {"type": "integer", "description": "`family` models: the rate they separate at, in Hz"},
        "chunk_size": {"type": "integer", "description": "`family` models: samples per model call"},
        "num_overlap": {"type": "integer", "description": "`family` models: chunks covering each sample"},
    }, required=["name", "kind", "description", "sources", "stems", "default_stems"]),
    "OutputOptions": closed({
        "formats": {"type": "array", "items": {"type": "string", "enum": OUTPUT_FORMATS}},
        "default": ref("Output"),
        "sample_rate_range": closed({"min": {"type": "integer"}, "max": {"type": "integer"}},
                                    description="the sample rates any format takes, in Hz, bounds included"),
        "sample_rates": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}},
                         "description": "format -> the only sample rates it takes (its encoder's)"},
        "channels": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 2}},
    }, description="what a job's `output` may ask for"),
    "ModelList": closed({
        "default_model": nullable({"type": "string", "description": "what a job that names no `model` runs; "
                                                                    "null while it cannot run"}),
        "models": {"type": "array", "items": ref("JobModel"),
                   "description": "the models that can run now, the default first"},
        "output": ref("OutputOptions"),
    }),
    "Error": closed({"error": ref("ErrorDetail"), "request_id": {"type": "string"}},
                    description="Every Jobs API failure."),
    "WebhookEvent": closed({
        "id": {"type": "string", "description": "the event id, also in the `Sami-Event-Id` header"},
        "type": {"type": "string", "enum": WEBHOOK_TYPES},
        "created_at": DATE_TIME,
        "data": closed({"job": ref("Job")}),
    }),
}

SCHEMAS: dict[str, Schema] = {**_INVOKE, **_GETTOKEN, **_SERVICE, **_JOBS}

# Examples, each checked against its schema by the tests.
_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
_RESULT_URL = ("https://gateway.example.com/api/v1/jobs/job_7c9e6679/results/vocals"
               "?expires=1796040000&signature=" + "0" * 64)
JOB_SUCCEEDED: dict[str, Any] = {
    "id": "job_7c9e6679", "name": "song.mp3", "status": "succeeded", "progress": 100.0, "ready": None,
    "model": "htdemucs_ft", "stems": ["vocals", "no_vocals"],
    "output": {"format": "wav", "sample_rate": 44100, "channels": 2}, "metadata": {"customer": "42"},
    "input": {"format": "mp3", "sample_rate": 44100, "channels": 2, "duration": 215.3},
    "created_at": "2026-11-29T12:00:00Z", "started_at": "2026-11-29T12:00:01Z",
    "completed_at": "2026-11-29T12:01:10Z", "expires_at": "2026-11-30T12:01:10Z", "error": None,
    "result": {"vocals": {"url": _RESULT_URL, "format": "wav", "size": 37939244, "sha256": _SHA, "duration": 215.3},
               "no_vocals": {"copied_to": "custom storage"}},
    "streams": None, "cache_hit": False, "webhook_url": "https://hooks.example.com/sami",
}
JOB_QUEUED: dict[str, Any] = {
    **JOB_SUCCEEDED, "status": "queued", "progress": 0.0, "input": None, "started_at": None,
    "completed_at": None, "expires_at": None, "result": None,
}
JOB_FAILED: dict[str, Any] = {
    **JOB_SUCCEEDED, "status": "failed", "progress": 12.5, "result": None,
    "error": {"status_code": 40000012, "status_text": "IllegalData", "message": "data cannot be decoded as audio"},
}

_FOUR = ["drums", "bass", "other", "vocals"]
_CODEC_RATES = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000]

EXAMPLES: dict[str, Any] = {
    "InvokeRequest": {"appkey": "my-appkey", "token": "eyJhbGciOiJIUzI1NiJ9...", "namespace": "MusicSourceSeparate",
                      "data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=",
                      "payload": "{\"model\": \"2track_vocal\", \"extra\": {\"output_format\": \"wav\"}}"},
    "InvokeReply": {"task_id": "5c0e3f4e-8d0e-4b5e-9d3a-2f1d2b9c7a10", "namespace": "MusicSourceSeparate",
                    "status_code": 20000000, "status_text": "OK", "payload": "{\"duration\": 1.0}",
                    "data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="},
    "GetTokenRequest": {"token_version": "volc-auth-v1", "appkey": "my-appkey", "expiration": 3600},
    "GetTokenReply": {"status_code": 20000000, "status_text": "OK", "task_id": "5c0e3f4e-8d0e-4b5e-9d3a-2f1d2b9c7a10",
                      "token": "eyJhbGciOiJIUzI1NiJ9...", "expires_at": 1796040000},
    "Readiness": {"status": "ready", "models_loaded": True, "admitting": True, "requests": 1,
                  "queued_audio_seconds": 215.3, "held_bytes": 912_261_120},
    "UploadTicket": {"upload_id": "up_3b1f8a2c",
                     "upload_url": "https://gateway.example.com/api/v1/uploads/up_3b1f8a2c"
                                   "?expires=1796040000&signature=" + "0" * 64,
                     "expires_at": "2026-11-29T13:00:00Z", "max_bytes": 104857600},
    "UploadDone": {"upload_id": "up_3b1f8a2c", "size": 5242880, "sha256": _SHA},
    "JobList": {"jobs": [JOB_SUCCEEDED, JOB_FAILED], "next_cursor": "eyJzZXEiOjQxfQ"},
    "WebhookEvent": {"id": "evt_0d9a5c3e", "type": "job.succeeded", "created_at": "2026-11-29T12:01:10Z",
                     "data": {"job": JOB_SUCCEEDED}},
    "ModelList": {
        "default_model": "htdemucs",
        "models": [
            {"name": "htdemucs", "kind": "demucs", "description": "Hybrid Transformer Demucs (v4), the default "
             "4-stem model", "sources": _FOUR, "stems": _FOUR + [f"no_{s}" for s in _FOUR], "default_stems": _FOUR},
            {"name": "2track_vocal", "kind": "sami", "description": "SAMI's 2-track vocal model: the vocals; "
             "no_vocals is the mix minus them (runs htdemucs_ft:vocals)", "sources": ["vocals"],
             "stems": ["vocals", "no_vocals"], "default_stems": ["vocals"]},
        ],
        "output": {"formats": OUTPUT_FORMATS, "default": {"format": "wav", "sample_rate": 44100, "channels": 2},
                   "sample_rate_range": {"min": 8000, "max": 48000},
                   "sample_rates": {"mp3": _CODEC_RATES, "aac": _CODEC_RATES, "m4a": _CODEC_RATES}, "channels": [1, 2]},
    },
}
JOB_REQUESTS: dict[str, Any] = {
    "url": {"input": {"url": "https://media.example.com/song.mp3"}, "model": "htdemucs_ft",
            "stems": ["vocals", "no_vocals"], "output": {"format": "flac"}, "name": "song.mp3",
            "metadata": {"customer": "42"}, "webhook_url": "https://hooks.example.com/sami"},
    "upload": {"input": {"upload_id": "up_3b1f8a2c"}, "stems": ["drums"],
               "copy_results_to": {"drums": "https://bucket.example.com/drums.wav?X-Amz-Signature=abc"}},
    "data": {"input": {"data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="},
             "model": "2track_vocal"},
}
