"""`/openapi.json` and `/docs`: the document, and Swagger UI from installed files only."""

from __future__ import annotations

import asyncio
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.config import load_config
from sami_gateway.errors import Code
from sami_gateway.openapi.document import build_document
from sami_gateway.openapi.page import ASSETS, DOCUMENT, PAGE_FILES, add_docs_routes, swagger_ui_dir

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    config = load_config({}, {"SAMI_TOKEN_SECRET": "q" * 32, "SAMI_APPKEYS": "k"})
    app = create_app(config, namespaces={})
    if DOCUMENT not in app:  # until create_app adds them itself
        add_docs_routes(app)
    return await aiohttp_client(app)


class Links(HTMLParser):
    """Every `src` and `href` of a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)


async def test_openapi_json_answers_the_document(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert orjson.loads(await response.read()) == orjson.loads(orjson.dumps(build_document()))


async def test_docs_page_uses_only_same_origin_files_that_answer(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200 and response.content_type == "text/html"
    text = await response.text()
    page = Links()
    page.feed(text)
    assert page.scripts == [] and "<style" not in text  # nothing inline: the policy allows none
    init = await (await client.get("/docs/init.js")).text()
    script_urls = re.findall(r'url:\s*"([^"]+)"', init)
    assert script_urls == ["openapi.json"]
    assert len(page.urls) == len(ASSETS) + len(PAGE_FILES)
    base = str(client.make_url("/docs"))
    for url in page.urls + script_urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not relative"
        target = urljoin(base, url)
        assert urlsplit(target).netloc == urlsplit(base).netloc
        asset = await client.get(urlsplit(target).path)
        assert asset.status == 200, url
        assert len(await asset.read()) > 0


async def test_docs_page_names_no_other_host(client: TestClient) -> None:
    text = await (await client.get("/docs")).text()
    assert "http://" not in text and "https://" not in text and "//" not in re.sub(r"<!DOCTYPE[^>]*>", "", text)


@pytest.mark.parametrize("name", sorted(ASSETS))
async def test_each_asset_is_served_with_its_type(client: TestClient, name: str) -> None:
    response = await client.get(f"/docs/{name}")
    assert response.status == 200
    assert response.headers["Content-Type"] == ASSETS[name]
    assert await response.read() == (swagger_ui_dir() / name).read_bytes()


DOCS_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
FILE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                "Cache-Control": "no-cache"}


async def test_the_page_is_held_to_its_own_files_and_never_framed(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert {name: response.headers.get(name) for name in FILE_HEADERS} == FILE_HEADERS
    assert response.headers["Content-Security-Policy"] == DOCS_POLICY  # data: only for Swagger UI's CSS icons
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("name", sorted([*ASSETS, *PAGE_FILES]))
async def test_each_file_of_the_page_has_the_same_headers(client: TestClient, name: str) -> None:
    response = await client.get(f"/docs/{name}")
    assert response.status == 200
    assert {header: response.headers.get(header) for header in FILE_HEADERS} == FILE_HEADERS
    assert response.content_type == (ASSETS[name] if name in ASSETS else PAGE_FILES[name][0])


@pytest.mark.parametrize("path", ["/docs/index.html", "/docs/swagger-initializer.js", "/docs/nope.css",
                                  "/docs/..%2Fopenapi.py", "/docs/%2E%2E%2F__init__.py"])
async def test_other_files_are_not_found(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert orjson.loads(await response.read())["status_code"] == Code.NOT_FOUND.value.code
    assert (await client.get("/healthz")).status == 200


def test_the_installed_swagger_ui_renders_openapi_3_1() -> None:
    """Swagger UI 5 is the first to render 3.1 (swagger-ui-bundle 1.x installs 4.15.5, which refuses it)."""
    version = re.fullmatch(r"swagger-ui-(\d+)\.(\d+)\.(\d+)", swagger_ui_dir().name)
    assert version is not None and int(version.group(1)) >= 5, swagger_ui_dir()


async def test_docs_render_in_headless_chromium(client: TestClient, tmp_path: Path) -> None:
    # scripts/install.sh --test installs Debian's chromium and chromium-driver: their absence is a failure.
    assert CHROMIUM and CHROMEDRIVER, "needs chromium and chromium-driver (bash scripts/install.sh --test)"
    url = str(client.make_url("/docs"))
    title, shot, console = await asyncio.to_thread(render, url, tmp_path / "docs.png")
    assert title.startswith(build_document()["info"]["title"])
    assert shot.stat().st_size > 10_000
    assert console == []  # no policy refusal (Content-Security-Policy) and no script error


def render(url: str, screenshot: Path) -> tuple[str, Path, list[str]]:
    """Open `url` in headless Chromium, wait for Swagger UI's title, open an operation, save a
    screenshot; the console's warnings and errors."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1600"):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get(url)
        title = WebDriverWait(driver, 30).until(expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, ".information-container .title")))
        text = title.text
        driver.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # an operation opens: its icons draw
        WebDriverWait(driver, 30).until(expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, ".opblock-body")))
        driver.save_screenshot(str(screenshot))
        console = [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("WARNING", "SEVERE")]
        return text, screenshot, console
    finally:
        driver.quit()
