"""Real Redis and SeaweedFS (S3) servers on loopback, one of each for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sami_gateway.cluster.servers import Server, redis_server, s3_server


@pytest.fixture(scope="session")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[Server]:
    with s3_server() as server:
        yield server
