"""`payload.url` downloads: address refusal, redirects, size cap, timeouts."""

from __future__ import annotations

import asyncio
import ipaddress
import mmap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sami_gateway.errors import Code, GatewayError
from sami_gateway.jobs.blobs import mapped, spool
from sami_gateway.runtime.outbound import FetchPolicy, OutboundHttp, refusal

BODY = b"RIFF" + b"x" * 5000


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("192.168.0.1", "private"), ("172.16.5.5", "private"), ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("100.64.0.1", "shared (CGNAT)"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("::ffff:127.0.0.1", "loopback"),
    ("240.0.0.1", "private"), ("fc00::1", "private"),
])
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(body=BODY)


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(100):
        await response.write(b"z" * 10_000)
    return response


def _app() -> web.Application:
    app = web.Application()
    routes = {
        "/file": lambda r: web.Response(body=BODY),
        "/empty": lambda r: web.Response(body=b""),
        "/missing": lambda r: web.Response(status=404),
        "/hop1": lambda r: web.HTTPFound("/file"),
        "/to-ip": lambda r: web.HTTPFound(f"http://127.0.0.1:{r.url.port}/file"),
        "/loop": lambda r: web.HTTPFound("/loop"),
        "/chain": lambda r: web.HTTPFound("/hop1"),
    }
    for path, handler in routes.items():
        app.router.add_get(path, _wrap(handler))
    app.router.add_get("/slow", _slow)
    app.router.add_get("/endless", _endless)
    return app


def _wrap(handler):  # type: ignore[no-untyped-def]
    async def wrapped(request: web.Request) -> web.StreamResponse:
        result = handler(request)
        if isinstance(result, web.HTTPException):
            raise result
        return result
    return wrapped


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    server = TestServer(_app(), host="127.0.0.1")
    await server.start_server()
    yield f"http://localhost:{server.port}"
    await server.close()


async def fetch(url: str, allow: tuple[str, ...] = ("localhost",), limit: int = 1 << 20,
                total: float = 2.0) -> bytes:
    outbound = OutboundHttp(FetchPolicy.from_entries(allow), 1.0, total)
    await outbound.open()
    try:
        return await outbound.fetch(url, limit)
    finally:
        await outbound.close()


async def expect(code: Code, url: str, **kwargs: object) -> str:
    with pytest.raises(GatewayError) as info:
        await fetch(url, **kwargs)  # type: ignore[arg-type]
    assert info.value.code is code
    return info.value.detail


async def test_allowed_host_is_fetched(origin: str) -> None:
    assert await fetch(origin + "/file") == BODY
    assert await fetch(origin + "/chain") == BODY  # two redirects


async def test_loopback_refused_without_allow(origin: str) -> None:
    detail = await expect(Code.FAILED_DOWNLOAD, origin + "/file", allow=())
    assert "loopback" in detail


async def test_allow_by_cidr(origin: str) -> None:
    ip_url = origin.replace("localhost", "127.0.0.1")
    assert await fetch(ip_url + "/file", allow=("127.0.0.0/8",)) == BODY
    await expect(Code.FAILED_DOWNLOAD, ip_url + "/file", allow=("10.0.0.0/8",))


async def test_redirect_to_refused_address_is_refused(origin: str) -> None:
    assert "loopback" in await expect(Code.FAILED_DOWNLOAD, origin + "/to-ip")


async def test_redirect_loop_is_bounded(origin: str) -> None:
    assert "redirects" in await expect(Code.FAILED_DOWNLOAD, origin + "/loop")


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "not a url",
                                 "http:///nohost"])
async def test_only_http_urls(url: str) -> None:
    await expect(Code.FAILED_DOWNLOAD, url)


async def test_status_empty_size_and_time_limits(origin: str) -> None:
    assert "404" in await expect(Code.FAILED_DOWNLOAD, origin + "/missing")
    await expect(Code.EMPTY_DATA, origin + "/empty")
    await expect(Code.EXCEEDED_DATA_SIZE, origin + "/file", limit=100)
    await expect(Code.EXCEEDED_DATA_SIZE, origin + "/endless", limit=50_000)
    assert "timed out" in await expect(Code.FAILED_DOWNLOAD, origin + "/slow", total=0.5)


@pytest.mark.parametrize(("address", "reason"), [
    ("2002:7f00:1::", "loopback"), ("2002:a9fe:a9fe::", "cloud metadata"), ("::ffff:10.0.0.1", "private"),
])
def test_ipv4_inside_ipv6_is_judged_as_ipv4(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


async def test_encoded_body_is_refused(aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    async def gzipped(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=b"\x1f\x8b fake", headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/a.wav", gzipped)
    server = await aiohttp_server(app, host="127.0.0.1")
    detail = await expect(Code.FAILED_DOWNLOAD, f"http://localhost:{server.port}/a.wav")
    assert "encoded" in detail and seen == ["identity"]


async def test_a_download_streams_to_a_file_as_it_arrives_and_is_mapped(origin: str, tmp_path: Path) -> None:
    """A job's `url` input goes to disk (the runner spools `stream` as the blob store spools uploads):
    the file holds the body, handed back as a read-only map; past the limit the same refusal as `fetch`."""
    outbound = OutboundHttp(FetchPolicy.from_entries(("localhost",)), 1.0, 2.0)
    await outbound.open()
    try:
        await spool(tmp_path / "big", outbound.stream(origin + "/endless", 1 << 20), 1 << 20)
        data = mapped(tmp_path / "big")
        assert isinstance(data, mmap.mmap) and data[:] == b"z" * 1_000_000
        data.close()
        with pytest.raises(GatewayError) as info:
            await spool(tmp_path / "too-big", outbound.stream(origin + "/endless", 50_000), 50_000)
        assert info.value.code is Code.EXCEEDED_DATA_SIZE
        assert not (tmp_path / "too-big").exists()  # the partial file is removed
    finally:
        await outbound.close()
