"""Typed keys for state shared through the aiohttp application and requests."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .auth import Authenticator
from .config import Config
from .fetch import Fetcher
from .namespace import Namespace
from .scheduler import Scheduler


@dataclass
class RequestContext:
    """What the error middleware needs to answer any request in the envelope."""

    task_id: str
    namespace: str = ""


CONFIG = web.AppKey("config", Config)
BODY_LIMIT = web.AppKey("body_limit", int)
AUTH = web.AppKey("auth", Authenticator)
FETCHER = web.AppKey("fetcher", Fetcher)
NAMESPACES = web.AppKey("namespaces", dict[str, Namespace])
SCHEDULER = web.AppKey("scheduler", Scheduler)
READY = web.AppKey("ready", dict[str, bool])
CONTEXT = web.RequestKey("context", RequestContext)
