"""Python client of sami-gateway: SAMI invoke, GetToken, uploads, the Jobs API, and webhook verification.

Blocking `SamiClient` and asyncio `AsyncSamiClient` have the same methods. Needs only httpx.
"""

from __future__ import annotations

from .aio import AsyncSamiClient
from .client import SamiClient
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    JobNotSucceeded,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    SamiClientError,
    SamiConnectionError,
    SamiError,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    WaitTimeout,
    WebhookVerificationError,
)
from .models import InvokeResult, Job, JobError, JobEvent, JobModel, JobPage, JobStatus, ModelList, StemResult, Upload
from .signer import sign_request
from .webhooks import WebhookEvent, sign_webhook, verify_webhook

__version__ = "0.1.0"

__all__ = [
    "AsyncSamiClient", "SamiClient",
    "Job", "JobError", "JobEvent", "JobPage", "JobStatus", "StemResult", "Upload", "InvokeResult", "WebhookEvent",
    "JobModel", "ModelList",
    "verify_webhook", "sign_webhook", "sign_request",
    "SamiClientError", "SamiConnectionError", "WaitTimeout", "JobNotSucceeded", "WebhookVerificationError",
    "SamiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "PayloadTooLarge",
    "UnsupportedMediaType", "QuotaExceeded", "ServerError", "Unavailable", "GatewayTimeout",
    "__version__",
]
