"""Configuration reload without a restart (SIGHUP): appkeys, access keys, token keys, quotas, and
what the role's services keep of it (webhook secrets, storage limits)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ..auth.authenticator import TokenService
from ..config import Config
from ..gettoken import GETTOKEN
from ..web.state import AUTH, SERVICES
from .services import reread

log = logging.getLogger(__name__)


def apply(app: web.Application, config: Config) -> None:
    """Swap in what may change while serving; a revoked appkey is refused from the next request."""
    tokens = TokenService.from_config(config)
    app[AUTH].replace(config.appkeys, tokens, config.default_quota)
    app[GETTOKEN].replace(config.access_keys, tokens, config.appkeys)
    app[SERVICES].reload(config)


def reload(app: web.Application, flags: Mapping[str, Any]) -> bool:
    """Read the configuration again and apply it; a bad one is logged and the old one kept."""
    config = reread(flags)
    if config is None:
        return False
    apply(app, config)
    log.info("configuration reloaded: %d appkeys, %d access keys", len(config.appkeys), len(config.access_keys))
    return True


def on_sighup(flags: Mapping[str, Any]) -> Callable[[web.Application], Awaitable[None]]:
    """A startup hook that reloads the configuration on SIGHUP."""
    async def install(app: web.Application) -> None:
        import asyncio

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload, app, dict(flags))
    return install
