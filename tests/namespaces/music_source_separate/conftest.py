"""Fixtures of the model store's tests: the loopback model server, an empty store and a repository on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import ModelServer, Remote, build_remote, serve


@pytest.fixture(scope="session")
def remote(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Remote:
    return build_remote(model_store, tmp_path_factory.mktemp("remote"))


@pytest.fixture
def server(remote: Remote) -> Iterator[ModelServer]:
    with serve(remote) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty store (not yet created); test_store.py's own `store` is a copy of the demo store."""
    return tmp_path / "store"


@pytest.fixture
def repo(store: Path, server: ModelServer, remote: Remote) -> ModelRepository:
    return ModelRepository(store, server.url, catalogue=remote.catalogue, timeout=5)
