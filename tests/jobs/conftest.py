"""An in-process gateway whose namespace runs jobs without a model (`stand_in.EchoJobs`)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.auth.authenticator import TokenService
from sami_gateway.config import load_config

from .stand_in import NS, EchoJobs

SECRET = "j" * 32
WEBHOOK_SECRET = "whsec-0123456789abcdef"
MakeClient = Callable[..., Coroutine[Any, Any, tuple[TestClient, EchoJobs]]]


def bearer(appkey: str = "k") -> dict[str, str]:
    return {"Authorization": "Bearer " + TokenService(SECRET).issue(appkey, 600)}


def data_input(content: bytes = b"Hello Song") -> dict[str, Any]:
    return {"data": base64.b64encode(content).decode()}


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> MakeClient:
    """A client of a fresh app on `tmp_path/data`; `env` adds SAMI_* settings; `server` is passed to
    aiohttp's runner (`handler_cancellation=True`, as `sami-gateway serve` runs it)."""
    async def make(namespace: EchoJobs | None = None, server: dict[str, Any] | None = None,
                   **env: str) -> tuple[TestClient, EchoJobs]:
        namespace = namespace or EchoJobs()
        values = {"SAMI_TOKEN_SECRET": SECRET, "SAMI_APPKEYS": "k,other", "SAMI_DATA_DIR": str(tmp_path / "data"),
                  "SAMI_FETCH_ALLOW": "127.0.0.1", "SAMI_WEBHOOK_SECRET": WEBHOOK_SECRET,
                  "SAMI_WEBHOOK_RETRY_DELAYS": "0.3,0.3,0.3", **env}
        config = load_config({}, values)
        client = await aiohttp_client(create_app(config, {NS: namespace}),  # type: ignore[dict-item]
                                      server_kwargs=server or {})
        return client, namespace
    return make
