"""`GET /openapi.json` and `GET /docs`: the OpenAPI document and Swagger UI, served from installed files."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
from aiohttp import web

from ..web.page_headers import SECURITY_HEADERS, content_security_policy
from ..web.state import JOBS
from .document import SWAGGER_UI_FILES as ASSETS  # the Swagger UI files the page uses; no other is served
from .document import build_document
from .live import Accepted

log = logging.getLogger(__name__)

# The page's own files: its script and style live here, not inline, so the policy needs no 'unsafe-inline'.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
});
"""
PAGE_FILES = {"init.js": ("text/javascript", INIT_JS), "page.css": ("text/css", "body { margin: 0; }\n")}
# Swagger UI's stylesheet draws its icons from data: URLs; nothing else comes from outside the gateway.
POLICY = content_security_policy(img_src="'self' data:")
ASSETS_DIR = web.AppKey("docs_assets", Path)
DOCUMENT = web.AppKey("openapi_document", bytes)  # the document of every gateway, without its job namespace's models


class LiveDocument:
    """This gateway's document: its job requests narrowed to the models its job namespace lists now
    (read from the store on each call, as `GET /api/v1/models`), built again when they change."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._built: tuple[Accepted, bytes] | None = None

    def accepted(self) -> Accepted | None:
        """What job requests may ask for now; None without a job namespace. On a worker thread."""
        jobs = self._app.get(JOBS)
        if jobs is None or jobs.namespace is None:
            return None
        return Accepted(jobs.namespace.job_models(), jobs.webhook_secret.configured())

    async def body(self) -> bytes:
        try:
            accepted = await asyncio.to_thread(self.accepted)
        except Exception:  # a store that cannot be listed: the document every gateway has
            log.exception("the job namespace's models cannot be listed; /openapi.json names none")
            accepted = None
        if accepted is None:
            return self._app[DOCUMENT]
        built = self._built
        if built is None or built[0] != accepted:
            built = accepted, await asyncio.to_thread(lambda: orjson.dumps(build_document(accepted)))
            self._built = built
        return built[1]


LIVE_DOCUMENT = web.AppKey("openapi_live_document", LiveDocument)

# Every URL is relative to /docs, so the page also works behind a proxy that adds a path prefix;
# nothing is fetched from anywhere else (the gateway often runs offline).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>sami-gateway API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
  <link rel="stylesheet" href="docs/page.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/init.js"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """The dist folder of the installed `swagger-ui-bundle` package."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document, as this gateway accepts requests now."""
    return web.Response(body=await request.app[LIVE_DOCUMENT].body(), content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    """Swagger UI, reading /openapi.json."""
    return web.Response(text=PAGE, content_type="text/html",
                        headers={"Content-Security-Policy": POLICY, **SECURITY_HEADERS})


async def docs_asset(request: web.Request) -> web.StreamResponse:
    """One of Swagger UI's files or the page's own; any other name is 404."""
    name = request.match_info["asset"]
    if name in PAGE_FILES:
        content_type, text = PAGE_FILES[name]
        return web.Response(text=text, content_type=content_type, headers=SECURITY_HEADERS)
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(request.app[ASSETS_DIR] / name, headers={"Content-Type": ASSETS[name], **SECURITY_HEADERS})


def add_docs_routes(app: web.Application) -> None:
    """Serve `/openapi.json`, `/docs` and `/docs/{asset}`; the document is built here, once."""
    folder = swagger_ui_dir()
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-bundle at {folder} lacks {', '.join(missing)}")
    app[ASSETS_DIR] = folder
    app[DOCUMENT] = orjson.dumps(build_document())
    app[LIVE_DOCUMENT] = LiveDocument(app)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/{asset}", docs_asset)
