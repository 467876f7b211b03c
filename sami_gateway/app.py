"""The application factory: routes, middleware and the lifetime of shared resources."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .auth import Authenticator, TokenService
from .config import Config
from .fetch import Fetcher, FetchPolicy
from .invoke import invoke
from .keys import AUTH, BODY_LIMIT, CONFIG, FETCHER, NAMESPACES
from .middleware import envelope_errors
from .namespace import Namespace, load_namespaces

PAYLOAD_ALLOWANCE_BYTES = 1024 * 1024  # room for the JSON around `data` and the payload string


def body_limit(max_input_bytes: int) -> int:
    """Largest invoke body: the base64 of the largest input (4/3 of it) plus the envelope."""
    return 4 * -(-max_input_bytes // 3) + PAYLOAD_ALLOWANCE_BYTES


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _namespaces_ctx(app: web.Application) -> AsyncIterator[None]:
    started: list[Namespace] = []
    try:
        for namespace in app[NAMESPACES].values():
            await namespace.start()
            started.append(namespace)
        yield
    finally:
        for namespace in reversed(started):
            await namespace.stop()


async def _fetcher_ctx(app: web.Application) -> AsyncIterator[None]:
    fetcher = app[FETCHER]
    await fetcher.open()
    yield
    await fetcher.close()


def create_app(config: Config, namespaces: dict[str, Namespace] | None = None) -> web.Application:
    """Build the gateway; `namespaces` replaces the configured plugins (tests)."""
    if namespaces is None:
        namespaces = load_namespaces(config)
    limit = body_limit(config.max_input_bytes)
    app = web.Application(middlewares=[envelope_errors], client_max_size=limit)
    app[CONFIG] = config
    app[BODY_LIMIT] = limit
    app[NAMESPACES] = namespaces
    app[AUTH] = Authenticator(config.appkeys, TokenService(config.token_secret), namespaces)
    app[FETCHER] = Fetcher(FetchPolicy.from_entries(config.fetch_allow),
                           config.fetch_connect_timeout, config.fetch_timeout)
    app.cleanup_ctx.extend([_fetcher_ctx, _namespaces_ctx])
    app.router.add_post("/api/v1/invoke", invoke)
    app.router.add_get("/healthz", healthz)
    return app
