"""`GET /api/v1/models`: what a job may ask for (models, their stems, output options), for pickers."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .http import authorized, json_response, service


async def list_models(request: web.Request) -> web.Response:
    """The job namespace's listing; 40200014 DeniedNamespace, as job submission, when none runs jobs.

    In a worker thread: unlike parsing one job, a listing looks at every model of the store (a
    stat per file, a layer's header the first time it is seen), which grows with the store and
    may sit on a slow or network disk; the hop costs a fraction of a millisecond."""
    authorized(request)
    namespace = service(request).job_namespace()
    return json_response(await asyncio.to_thread(namespace.job_models))
