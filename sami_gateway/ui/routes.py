"""`GET /ui` and its files: a page for people, built on the public Jobs API only.

The files are plain HTML, CSS and JavaScript modules installed with the package (no build step,
no CDN, no web fonts), so the page works on a gateway without internet access. A Content Security
Policy holds it to its own origin, plus the storage origin its result URLs point at in scale-out.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from ..web.page_headers import SECURITY_HEADERS
from ..web.page_headers import content_security_policy as page_policy
from ..web.state import JOBS, PAGE_POLICY, PagePolicy

STATIC = Path(__file__).resolve().parent / "static"
# The page's files and their types; no other name under /ui/ is served.
ASSETS = {
    "app.js": "text/javascript",
    "api.js": "text/javascript",
    "follow.js": "text/javascript",
    "results.js": "text/javascript",
    "sign.js": "text/javascript",
    "wave.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
}


def content_security_policy(result_origin: str = "") -> str:
    """Scripts, styles and calls from this origin only (results may come from the storage's)."""
    return page_policy(media_src="'self' blob:", connect_src=f"'self' {result_origin}".strip())


def result_origin(app: web.Application) -> str:
    """The origin of result URLs that storage serves directly (scale-out), or '' for the gateway's own."""
    jobs = app.get(JOBS)
    url = jobs.blobs.public_url("ui-probe", 60, "probe.wav", "audio/wav") if jobs is not None else None
    parts = urlsplit(url) if url else None
    return f"{parts.scheme}://{parts.netloc}" if parts and parts.netloc else ""


async def ui_page(request: web.Request) -> web.FileResponse:
    policy = request.app[PAGE_POLICY]
    if policy.header is None:
        policy.header = content_security_policy(result_origin(request.app))
    return web.FileResponse(STATIC / "index.html", headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": policy.header, **SECURITY_HEADERS})


async def ui_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": ASSETS[name], **SECURITY_HEADERS})


async def ui_slash(request: web.Request) -> web.Response:
    """`/ui/` to `/ui`: the page's relative URLs are resolved against `/ui`."""
    raise web.HTTPMovedPermanently("../ui")


def add_ui_routes(app: web.Application) -> None:
    missing = [name for name in ("index.html", *ASSETS) if not (STATIC / name).is_file()]
    if missing:
        raise RuntimeError(f"the page's files are not installed: {', '.join(missing)}")
    app[PAGE_POLICY] = PagePolicy()
    app.router.add_get("/ui", ui_page)
    app.router.add_get("/ui/", ui_slash)
    app.router.add_get("/ui/{asset}", ui_asset)
