"""The contract between the gateway and a namespace plugin."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Config
from .scheduler import Scheduler


class NamespaceStartError(RuntimeError):
    """A namespace cannot start (e.g. a model is missing); the message says how to fix it."""


@dataclass(frozen=True)
class InvokeInput:
    """What a namespace receives: the input bytes (decoded or downloaded) and the payload."""

    task_id: str
    appkey: str
    data: bytes
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class InvokeOutput:
    """What a namespace returns: binary result and the JSON payload describing it."""

    data: bytes | None
    payload: Mapping[str, Any] = field(default_factory=dict)
    log: Mapping[str, Any] = field(default_factory=dict)  # for the request's log line: model, durations


class Namespace(Protocol):
    """A SAMI namespace: validates its payload cheaply, then runs off the event loop."""

    name: str
    needs_input: bool
    max_input_bytes: int

    def check_payload(self, payload: Mapping[str, Any]) -> None:
        """Raise GatewayError for a payload that can never succeed (before any download)."""

    async def start(self, scheduler: Scheduler) -> None:
        """Load what the namespace needs (models); called once before serving.

        Heavy work goes through `scheduler`, which admits, interleaves and drops it."""

    async def stop(self) -> None:
        """Release what start() took."""

    async def invoke(self, request: InvokeInput) -> InvokeOutput:
        """Run one request; raise GatewayError for the client's mistakes."""


def load_namespaces(config: Config) -> dict[str, Namespace]:
    """Import each configured plugin module and build its namespace from the config."""
    loaded: dict[str, Namespace] = {}
    for module_name in config.namespaces:
        module = importlib.import_module(module_name)
        namespace: Namespace = module.create_namespace(config)
        if namespace.name in loaded:
            raise ValueError(f"namespace {namespace.name} is provided twice")
        loaded[namespace.name] = namespace
    return loaded
