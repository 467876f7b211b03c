"""Running the app: listen, guard the connections, drain on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import suppress

from aiohttp import web
from aiohttp.log import server_logger

from ..config import Config
from .access_log import AccessLogger
from .bad_requests import MalformedRequestLog
from .connections import ConnectionGuard
from .door import Door
from .listener import Listener, listening_sockets
from .state import METRICS

log = logging.getLogger(__name__)

BACKLOG = 1024  # a burst of connects waits in the kernel's queue instead of being dropped and retried


async def serve(app: web.Application, config: Config) -> None:
    """Serve `app` until cancelled, then close the listener and drain for `config.shutdown_grace` seconds."""
    runner = web.AppRunner(app, handle_signals=True, access_log_class=AccessLogger, handler_cancellation=True,
                           shutdown_timeout=config.shutdown_grace, keepalive_timeout=config.keepalive_timeout)
    await runner.setup()  # runs the startup hooks; SIGTERM and SIGINT now raise web.GracefulExit
    gc.freeze()  # what startup built lives as long as the process: full collections need not walk it again
    malformed = MalformedRequestLog()
    malformed.install(server_logger)
    guard: ConnectionGuard | None = None
    listener: Listener | None = None
    try:
        assert runner.server is not None  # made by setup
        guard = ConnectionGuard(runner.server, header_timeout=config.header_timeout,
                                max_connections=config.max_connections,
                                on_refuse=app[METRICS].rejections.labels("connections").inc, door=Door(app))
        listener = Listener(listening_sockets(config.host, config.port, BACKLOG), guard, guard.first_look)
        log.info("serving on %s:%d, at most %d connections", config.host, config.port, config.max_connections)
        await asyncio.Event().wait()
    finally:
        if listener is not None:
            listener.close()
        if guard is not None:
            guard.close()  # as aiohttp closes its idle connections next
        await runner.cleanup()
        malformed.remove()


def run(app: web.Application, config: Config) -> None:
    """Serve `app` on uvloop until SIGTERM or SIGINT, as `web.run_app` does; startup errors propagate."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve(app, config))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({"message": "unhandled exception during shutdown",
                                         "exception": task.exception(), "task": task})
