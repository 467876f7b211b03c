"""Outbound HTTP: downloads of `payload.url` and of job inputs, webhook POSTs and PUTs to
`copy_results_to`; size-capped, time-limited, refusing internal addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from ..errors import Code, GatewayError, error

MAX_REDIRECTS = 3  # enough for CDN hops; more is a loop or a trick
CHUNK_BYTES = 64 * 1024
REPLY_BYTES = 4096  # of a webhook receiver's or copy target's reply: only its status counts; the rest is dropped
_HEADERS = {"Accept-Encoding": "identity"}  # the bytes as stored: no gzip to undo or to bomb us
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not global
_METADATA = ipaddress.ip_address("169.254.169.254")


def refusal(address: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        # Judge an IPv4 address carried inside IPv6 (mapped, 6to4, Teredo client) by itself.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return refusal(embedded)
    checks = (
        (address == _METADATA, "cloud metadata"),
        (address.is_loopback, "loopback"),
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address in _SHARED if address.version == 4 else False, "shared (CGNAT)"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    return next((reason for hit, reason in checks if hit), None)


@dataclass(frozen=True)
class FetchPolicy:
    """Which hosts and networks are allowed despite being internal."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> FetchPolicy:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def check(self, host: str, address: IPAddress) -> None:
        if host.lower().rstrip(".") in self.hosts or any(address in n for n in self.networks):
            return
        reason = refusal(address)
        if reason:
            raise error(Code.FAILED_DOWNLOAD, f"{host} resolves to a {reason} address")


class GuardedResolver(AbstractResolver):
    """Resolves, then keeps only checked addresses: the connection goes to what was checked."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check(host, ipaddress.ip_address(result["host"]))
        return results

    async def close(self) -> None:
        await self._inner.close()


class OutboundHttp:
    """Owns the client session of every outbound request: GET a URL's bytes (`fetch`), send a PUT or
    POST (`send`)."""

    def __init__(self, policy: FetchPolicy, connect_timeout: float, total_timeout: float) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._policy), use_dns_cache=False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                              auto_decompress=False, trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _check_url(self, url: URL) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise error(Code.FAILED_DOWNLOAD, "only http and https URLs with a host are fetched")
        try:
            literal = ipaddress.ip_address(url.host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        self._policy.check(url.host, literal)

    async def fetch(self, url_text: str, max_bytes: int) -> bytes:
        """The body at `url_text`, following at most MAX_REDIRECTS checked redirects."""
        return b"".join([chunk async for chunk in self.stream(url_text, max_bytes)])

    async def stream(self, url_text: str, max_bytes: int) -> AsyncIterator[bytes]:
        """As `fetch`, the body's chunks as they arrive (a large download is never held whole);
        the same checks, limits and errors, raised where the stream is read."""
        assert self._session is not None, "OutboundHttp.open() was not awaited"
        try:
            async with asyncio.timeout(self._timeout.total):  # one budget for all the hops
                async for chunk in self._follow(URL(url_text), max_bytes):
                    yield chunk
        except GatewayError:
            raise
        except TimeoutError as exc:
            raise error(Code.FAILED_DOWNLOAD, "timed out") from exc
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            raise error(Code.FAILED_DOWNLOAD, type(exc).__name__) from exc

    async def send(self, method: str, url_text: str, body: bytes | Path, headers: Mapping[str, str],
                   timeout: float) -> int:
        """Send `body` (bytes, or a file streamed from disk) to a caller's URL under the same rules
        as a download (webhooks, `copy_results_to`); redirects are not followed. The HTTP status."""
        assert self._session is not None, "OutboundHttp.open() was not awaited"
        url = URL(url_text)
        self._check_url(url)
        data: Any = body if isinstance(body, bytes) else _file_chunks(body)
        sent = {**headers}
        if isinstance(body, Path):
            sent["Content-Length"] = str(body.stat().st_size)
        async with asyncio.timeout(timeout):
            async with self._session.request(method, url, data=data, headers=sent, allow_redirects=False) as response:
                await response.content.read(REPLY_BYTES)
                if not response.content.at_eof():
                    response.close()  # a longer reply is never read: its connection is dropped instead
                return response.status

    async def _follow(self, url: URL, max_bytes: int) -> AsyncIterator[bytes]:
        assert self._session is not None
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            async with self._session.get(url, allow_redirects=False, headers=_HEADERS) as response:
                if response.status in (301, 302, 303, 307, 308):
                    url = url.join(URL(response.headers.get("Location", "")))
                    continue
                async for chunk in self._read(response, max_bytes):
                    yield chunk
                return
        raise error(Code.FAILED_DOWNLOAD, f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    async def _read(response: aiohttp.ClientResponse, max_bytes: int) -> AsyncIterator[bytes]:
        if response.status != 200:
            raise error(Code.FAILED_DOWNLOAD, f"HTTP {response.status}")
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise error(Code.FAILED_DOWNLOAD, "the server sent an encoded body")
        too_big = error(Code.EXCEEDED_DATA_SIZE, f"download larger than {max_bytes} bytes")
        if (response.content_length or 0) > max_bytes:
            raise too_big
        size = 0
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise too_big
            yield chunk
        if size == 0:
            raise error(Code.EMPTY_DATA, "the url gave 0 bytes")


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file read a chunk at a time off the event loop."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, 16 * CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()
