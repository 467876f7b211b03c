"""Webhook delivery: each terminal event POSTed, signed, until one attempt gets a 2xx.

Events are written with the job's terminal state (the store's `transition`), so a restart
finds the undelivered ones and their schedule: after about 10 s, 30 s, 1 min, 5 min and 15 min,
then hourly, for at least a day, with a little jitter so that receivers that came back are not
hit by every gateway at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from ..config.jobs import JobSettings, job_settings
from ..errors import GatewayError, log_failure, store_trouble
from ..runtime.outbound import OutboundHttp
from ..runtime.periodic import Background
from .model import Job, WebhookEvent
from .store import JobStore

log = logging.getLogger(__name__)
RETRY_DELAYS = JobSettings.webhook_retry_delays  # seconds after each failed attempt (the default); then hourly
HOURLY = 3600.0
GIVE_UP_AFTER = 25 * 3600.0  # retried for at least 24 h: the last hourly attempt lands after it
JITTER = 0.1  # each delay is stretched or shrunk by up to 10 %
BATCH = 16  # events attempted at once
IDLE_SECONDS = 5.0  # with nothing due, look again this often (or when woken)


class WebhookSecrets:
    """The key each appkey's webhooks are signed with: its own (`[appkeys.K] webhook_secret`), else
    `SAMI_WEBHOOK_SECRET`. A configuration reload (SIGHUP) replaces both, in every role."""

    def __init__(self, config: Any) -> None:
        self.replace(config)

    def replace(self, config: Any) -> None:
        self._appkeys, self._default = config.appkeys, job_settings(config).webhook_secret

    def __call__(self, appkey: str) -> str:
        rule = self._appkeys.get(appkey)
        return (rule.webhook_secret if rule is not None else None) or self._default

    def configured(self) -> bool:
        """Whether any appkey's webhooks can be signed (else every `webhook_url` is refused)."""
        return bool(self._default) or any(rule.webhook_secret for rule in self._appkeys.values())


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def next_delay(attempts: int, rng: random.Random, delays: tuple[float, ...] = RETRY_DELAYS) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    base = delays[attempts - 1] if attempts <= len(delays) else HOURLY
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


class WebhookSender:
    """Delivers due events in the background; woken when a new one is written."""

    def __init__(self, store: JobStore, outbound: OutboundHttp, secret: Callable[[str], str], timeout: float,
                 delays: tuple[float, ...] = RETRY_DELAYS,
                 on_attempt: Callable[[str], None] = lambda outcome: None) -> None:
        self._delays = delays
        self._store = store
        self._outbound = outbound
        self._secret = secret
        self._timeout = timeout
        self._on_attempt = on_attempt
        self._wake = asyncio.Event()
        self._task = Background("webhooks", self._loop)
        self._rng = random.Random()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    def on_change(self, job: Job) -> None:
        if job.status.terminal and job.webhook_url:
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            upcoming: float | None = None
            try:
                due = await self._store.due_events(time.time(), BATCH)
                if due and await self._attempt_all(due):
                    continue
                if not due:
                    upcoming = await self._store.next_event_at()
            except Exception:  # noqa: BLE001 - a store hiccup must not end delivery
                log_failure(log, "webhook delivery round failed")
            wait = IDLE_SECONDS if upcoming is None else min(IDLE_SECONDS, max(0.0, upcoming - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _attempt_all(self, due: list[WebhookEvent]) -> bool:
        """Attempt each event; whether any attempt was recorded (none: the store is failing, so wait)."""
        outcomes = await asyncio.gather(*(self._attempt(event) for event in due), return_exceptions=True)
        for event, outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, GatewayError) and store_trouble(outcome):  # not recorded: due again
                log.warning("webhook %s of job %s: the attempt was not recorded: %s", event.id, event.job_id,
                            outcome.detail)
            elif isinstance(outcome, Exception):  # its attempt is not recorded: it is due again
                log.error("webhook %s of job %s: the attempt failed", event.id, event.job_id, exc_info=outcome)
        return not all(isinstance(outcome, Exception) for outcome in outcomes)

    async def _attempt(self, event: WebhookEvent) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "sami-gateway-webhooks",
                   "Sami-Event-Id": event.id,
                   "Sami-Signature": signature_header(self._secret(event.appkey), event.body, int(time.time()))}
        problem = ""
        try:
            status = await self._outbound.send("POST", event.url, event.body, headers, self._timeout)
            if not 200 <= status < 300:
                problem = f"HTTP {status}"
        except GatewayError as exc:
            problem = exc.detail or exc.status.text
        except (OSError, TimeoutError, ValueError) as exc:
            problem = type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - aiohttp's client errors and the like
            problem = type(exc).__name__
        now = time.time()
        attempts = event.attempts + 1
        if not problem:
            updated = event.with_(attempts=attempts, delivered_at=now, last_error="")
            self._on_attempt("delivered")
        elif now - event.created_at >= GIVE_UP_AFTER:
            updated = event.with_(attempts=attempts, abandoned_at=now, last_error=problem)
            self._on_attempt("abandoned")
            log.warning("webhook %s of job %s abandoned after %d attempts: %s", event.id, event.job_id,
                        attempts, problem)
        else:
            retry_at = now + next_delay(attempts, self._rng, self._delays)
            updated = event.with_(attempts=attempts, next_attempt_at=retry_at, last_error=problem)
            self._on_attempt("failed")
            log.info("webhook %s of job %s: attempt %d failed (%s)", event.id, event.job_id, attempts, problem)
        await self._store.event_attempted(updated)
