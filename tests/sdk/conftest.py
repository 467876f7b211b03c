"""The SDK's fixtures: a fake gateway of the Jobs API contract, and clients of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sami_client import AsyncSamiClient, SamiClient

from .fake_gateway import TOKEN, FakeGateway


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake: FakeGateway) -> Iterator[SamiClient]:
    with SamiClient(fake.url, TOKEN, timeout=10, max_retries=3) as sami:
        yield sami


@pytest.fixture
async def aclient(fake: FakeGateway) -> AsyncIterator[AsyncSamiClient]:
    async with AsyncSamiClient(fake.url, TOKEN, timeout=10, max_retries=3) as sami:
        yield sami
