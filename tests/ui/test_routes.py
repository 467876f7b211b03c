"""`/ui` and its files: served from the package, typed, held to their own origin by policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.config import load_config
from sami_gateway.ui.routes import ASSETS, STATIC, content_security_policy

from ..test_docs import Links


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    config = load_config({}, {"SAMI_TOKEN_SECRET": "q" * 32, "SAMI_APPKEYS": "k"})
    return await aiohttp_client(create_app(config, namespaces={}))


async def test_the_page_is_served_with_a_policy_of_its_own_origin(client: TestClient) -> None:
    response = await client.get("/ui")
    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert policy == content_security_policy("")
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self';" in policy
    assert "img-src 'self';" in policy  # the icon is a file: no data: URL is needed
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await response.text()) == (STATIC / "index.html").read_text()


async def test_every_file_the_page_names_is_served_with_its_type(client: TestClient) -> None:
    links = Links()
    links.feed((STATIC / "index.html").read_text())
    named = {url for url in links.urls if url.startswith("ui/")}
    assert named == {"ui/app.js", "ui/style.css", "ui/icon.svg"}
    for name in ASSETS:
        response = await client.get(f"/ui/{name}")
        assert response.status == 200, name
        assert response.content_type == ASSETS[name], name
        assert (await response.read()) == (STATIC / name).read_bytes()


def test_every_module_imported_is_served() -> None:
    """The modules app.js imports (and those they import) are all in ASSETS."""
    for name in [name for name in ASSETS if name.endswith(".js")]:
        for imported in re.findall(r'from "\./([\w.]+)"', (STATIC / name).read_text()):
            assert imported in ASSETS, f"{name} imports {imported}, which /ui/ does not serve"


def test_the_page_names_no_other_host() -> None:
    """Nothing in the page's files points anywhere but the gateway (the SVG namespace is a name, not a fetch)."""
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)
        assert [url for url in urls if url != "http://www.w3.org/2000/svg"] == [], path.name


@pytest.mark.parametrize("path", ["/ui/index.html", "/ui/../app.py", "/ui/..%2Fapp.py", "/ui/..%2F..%2Fstate.py",
                                  "/ui/routes.py", "/ui/static", "/ui/x.js"])
async def test_other_files_are_not_found(client: TestClient, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 404


async def test_a_trailing_slash_leads_to_the_page(client: TestClient) -> None:
    response = await client.get("/ui/", allow_redirects=False)
    assert response.status == 301
    response = await client.get("/ui/")
    assert response.status == 200 and str(response.url).endswith("/ui")


def test_results_from_storage_are_allowed_by_origin_only() -> None:
    policy = content_security_policy("https://s3.example.com:9000")
    assert "connect-src 'self' https://s3.example.com:9000;" in policy
    assert "media-src 'self' blob:;" in policy  # players play what the page fetched


def test_the_files_are_installed_with_the_package() -> None:
    """pyproject ships static/*; every file there is one the routes serve (nothing stray)."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"sami_gateway.ui" = ["static/*"]' in text
    assert {path.name for path in STATIC.iterdir()} == {"index.html", *ASSETS}
