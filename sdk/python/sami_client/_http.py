"""Transport: one request as a `Call`, sent by httpx (blocking or asyncio) with the retry policy."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from .errors import SamiConnectionError, SamiError, error_from_answer

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 503})  # refused before any work was done: safe to send again later
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 60.0  # a Retry-After longer than this is not waited for: the error is raised
BACKOFF_BASE = 0.5  # seconds before the first retry without Retry-After, doubled each time
BACKOFF_MAX = 8.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: `max_retries` extra attempts, no single wait above `max_wait`."""

    max_retries: int = DEFAULT_MAX_RETRIES
    max_wait: float = DEFAULT_MAX_RETRY_WAIT

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half the step is fixed, half random."""
        step = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** attempt)
        return step / 2 + random.uniform(0, step / 2)

    def delay(self, attempt: int, error: SamiError | None) -> float | None:
        """Seconds before attempt `attempt + 1`, or None when no retry should be made."""
        if attempt >= self.max_retries:
            return None
        if error is not None and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_wait else None
        return min(self.backoff(attempt), self.max_wait)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer.

    `idempotent` calls are retried on 429/503 and broken connections; others only when the connection
    could not even be opened (nothing was sent), unless `retries` asks for more. `body`, when given,
    makes a fresh streamed body for each attempt.
    """

    method: str
    url: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    body: Callable[[], Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    auth: bool = True
    retries: int | None = None
    timeout: float | httpx.Timeout | None = None

    def retryable_status(self, status: int) -> bool:
        return status in RETRY_STATUSES and (self.idempotent or bool(self.retries))

    def retryable_exception(self, exc: httpx.TransportError) -> bool:
        return isinstance(exc, httpx.ConnectError) or self.idempotent or bool(self.retries)


class _Base:
    """What the blocking and the asyncio transports share: settings, headers, decisions."""

    def __init__(self, token: str | None, policy: RetryPolicy) -> None:
        self.token = token
        self.policy = policy

    def _policy(self, call: Call[Any]) -> RetryPolicy:
        if call.retries is None:
            return self.policy
        return RetryPolicy(call.retries, self.policy.max_wait)

    def _request_args(self, call: Call[Any]) -> dict[str, Any]:
        headers = dict(call.headers)
        if call.auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        args: dict[str, Any] = {"params": call.params, "headers": headers}
        if call.json is not None:
            args["json"] = call.json
        elif call.body is not None:
            args["content"] = call.body()
        elif call.content is not None:
            args["content"] = call.content
        if call.timeout is not None:
            args["timeout"] = call.timeout
        return args

    @staticmethod
    def _error(response: httpx.Response, content: bytes) -> SamiError:
        return error_from_answer(response.status_code, content, response.headers, response.reason_phrase)

    def _on_exception(self, call: Call[Any], exc: httpx.TransportError, attempt: int) -> float:
        delay = self._policy(call).delay(attempt, None) if call.retryable_exception(exc) else None
        if delay is None:
            where = call.url.partition("?")[0]  # a signed URL's query is a credential: kept out of messages
            raise SamiConnectionError(f"{call.method} {where}: {exc!r}") from exc
        return delay

    def _on_error(self, call: Call[Any], error: SamiError, attempt: int) -> float:
        delay = self._policy(call).delay(attempt, error) if call.retryable_status(error.http_status) else None
        if delay is None:
            raise error
        return delay


class Transport(_Base):
    """Blocking: sends Calls with an `httpx.Client`."""

    def __init__(self, client: httpx.Client, token: str | None, policy: RetryPolicy) -> None:
        super().__init__(token, policy)
        self.client = client

    def call(self, call: Call[T]) -> T:
        """Send `call` (retrying as its policy allows) and parse its answer; SamiError on an error answer."""
        return call.parse(self._send(call, stream=False))

    @contextlib.contextmanager
    def stream(self, call: Call[Any]) -> Iterator[httpx.Response]:
        """The successful answer to `call`, its body not yet read (for downloads and event streams)."""
        response = self._send(call, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                outcome = self._attempt(call, stream)
            except httpx.TransportError as exc:
                delay = self._on_exception(call, exc, attempt)
            else:
                if isinstance(outcome, httpx.Response):
                    return outcome
                delay = self._on_error(call, outcome, attempt)
            time.sleep(delay)
            attempt += 1

    def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response | SamiError:
        """One attempt: the successful answer (read unless `stream`) or the error it answered (read, so closed)."""
        request = self.client.build_request(call.method, call.url, **self._request_args(call))
        # A result may redirect to shared storage (a scale-out gateway's presigned URL); httpx drops
        # the Authorization header on the way to another origin.
        response = self.client.send(request, stream=True, follow_redirects=call.method == "GET")
        try:
            if not response.is_success:
                return self._error(response, response.read())
            if not stream:
                response.read()
        except BaseException:
            response.close()
            raise
        return response


class AsyncTransport(_Base):
    """asyncio: sends Calls with an `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient, token: str | None, policy: RetryPolicy) -> None:
        super().__init__(token, policy)
        self.client = client

    async def call(self, call: Call[T]) -> T:
        """Send `call` (retrying as its policy allows) and parse its answer; SamiError on an error answer."""
        return call.parse(await self._send(call, stream=False))

    @contextlib.asynccontextmanager
    async def stream(self, call: Call[Any]) -> AsyncIterator[httpx.Response]:
        """The successful answer to `call`, its body not yet read (for downloads and event streams)."""
        response = await self._send(call, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def _send(self, call: Call[Any], *, stream: bool) -> httpx.Response:
        attempt = 0
        while True:
            try:
                outcome = await self._attempt(call, stream)
            except httpx.TransportError as exc:
                delay = self._on_exception(call, exc, attempt)
            else:
                if isinstance(outcome, httpx.Response):
                    return outcome
                delay = self._on_error(call, outcome, attempt)
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(self, call: Call[Any], stream: bool) -> httpx.Response | SamiError:
        """One attempt: the successful answer (read unless `stream`) or the error it answered (read, so closed)."""
        request = self.client.build_request(call.method, call.url, **self._request_args(call))
        response = await self.client.send(request, stream=True, follow_redirects=call.method == "GET")
        try:
            if not response.is_success:
                return self._error(response, await response.aread())
            if not stream:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response
