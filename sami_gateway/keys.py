"""Typed keys for state shared through the aiohttp application and requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .auth import Authenticator
from .config import Config
from .fetch import Fetcher
from .metrics import Metrics
from .namespace import Namespace
from .quota import QuotaTracker
from .scheduler import Scheduler


@dataclass
class RequestContext:
    """What the middleware and the access log know of a request (never its token)."""

    task_id: str
    namespace: str = ""
    appkey: str = ""
    status_code: int = 0
    log: dict[str, Any] = field(default_factory=dict)


CONFIG = web.AppKey("config", Config)
BODY_LIMIT = web.AppKey("body_limit", int)
AUTH = web.AppKey("auth", Authenticator)
FETCHER = web.AppKey("fetcher", Fetcher)
NAMESPACES = web.AppKey("namespaces", dict[str, Namespace])
SCHEDULER = web.AppKey("scheduler", Scheduler)
METRICS = web.AppKey("metrics", Metrics)
QUOTAS = web.AppKey("quotas", QuotaTracker)
READY = web.AppKey("ready", dict[str, bool])
CONTEXT = web.RequestKey("context", RequestContext)
