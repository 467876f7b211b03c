"""What the app and each request share, under typed keys: the app's resources and a request's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..auth.authenticator import Authenticator, Authorization
from ..auth.quota import Quotas, StreamSlots
from ..config import Config
from ..jobs.service import JobService
from ..runtime.metrics import Metrics
from ..runtime.namespace import Namespace, RunReport
from ..runtime.outbound import OutboundHttp
from ..runtime.scheduler import Scheduler


@dataclass
class Readiness:
    """What /readyz reports: models loaded, and new requests admitted (not shutting down)."""

    models_loaded: bool = False
    admitting: bool = False


@dataclass
class PagePolicy:
    """The Content Security Policy of the page at /ui, made on its first request (storage is known by then)."""

    header: str | None = None


@dataclass
class RequestContext:
    """What the middleware and the access log know of a request (never its token)."""

    task_id: str
    namespace: str = ""
    auth: Authorization | None = None  # an invoke's, decided once, from the query or from the body
    appkey: str = ""  # who called, for the log: the authorization's, or the appkey GetToken issued for
    status_code: int = 0
    report: RunReport | None = None


CONFIG = web.AppKey("config", Config)
BODY_LIMIT = web.AppKey("body_limit", int)
AUTH = web.AppKey("auth", Authenticator)
OUTBOUND = web.AppKey("outbound", OutboundHttp)
JOBS = web.AppKey("jobs", JobService)  # the Jobs API's service
NAMESPACES = web.AppKey("namespaces", dict[str, Namespace[Any]])
SCHEDULER = web.AppKey("scheduler", Scheduler)
METRICS = web.AppKey("metrics", Metrics)
QUOTAS = web.AppKey("quotas", Quotas)
STREAMS = web.AppKey("streams", StreamSlots)  # event streams and long polls held open, per appkey
READY = web.AppKey("ready", Readiness)
PAGE_POLICY = web.AppKey("page_policy", PagePolicy)
# The role's services (`roles/services.py`); typed loosely here, since the roles import this module.
SERVICES: web.AppKey[Any] = web.AppKey("services")
CONTEXT = web.RequestKey("context", RequestContext)
