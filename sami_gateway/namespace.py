"""The contract between the gateway and a namespace plugin: parse, start, run, stop.

`parse` validates a payload cheaply, before any download, into the namespace's own value;
`run` gets that value back with the input bytes. The invoke handler (and any later entry
point) calls the same two verbs, so nothing is parsed or validated twice.
"""

from __future__ import annotations

import importlib
import mmap
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from .config import Config
from .scheduler import Scheduler

Params = TypeVar("Params")
InputBytes = bytes | mmap.mmap  # an input as decoded from `data` (a memory map when large) or downloaded


def release(data: InputBytes) -> None:
    """Give back an input's memory once it has been read: a memory map is unmapped now, on the
    calling (worker) thread, rather than when the request ends on the event loop, where unmapping
    100 MB takes tens of milliseconds. A map still viewed somewhere is left to be freed later."""
    if isinstance(data, mmap.mmap):
        try:
            data.close()
        except BufferError:
            pass


class NamespaceStartError(RuntimeError):
    """A namespace cannot start (e.g. a model is missing); the message says how to fix it."""


@dataclass(frozen=True)
class Call(Generic[Params]):
    """One run: the payload as `parse` returned it and the input bytes."""

    task_id: str
    appkey: str
    params: Params
    data: InputBytes  # the namespace may `release` it once read


@dataclass(frozen=True)
class RunReport:
    """What the gateway logs and counts of a run."""

    model: str  # a bounded name (the metrics label)
    input_seconds: float  # seconds of input processed
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # logged as `<stage>_seconds`


@dataclass(frozen=True)
class Result:
    """A run's answer: binary result, the JSON payload describing it, and its report."""

    data: bytes | None
    payload: Mapping[str, Any]
    report: RunReport


class Namespace(Protocol[Params]):
    """A SAMI namespace: parses its payload cheaply, then runs off the event loop."""

    name: str
    needs_input: bool
    max_input_bytes: int

    def parse(self, payload: Mapping[str, Any]) -> Params:
        """The payload as the namespace's value; raise GatewayError for one that can never succeed."""

    async def start(self, scheduler: Scheduler) -> None:
        """Load what the namespace needs (models); called once before serving.

        Heavy work goes through `scheduler`, which admits, interleaves and drops it."""

    async def stop(self) -> None:
        """Release what start() took."""

    def load_seconds(self) -> Mapping[str, float]:
        """Each model start() loaded, with the seconds it took."""

    async def run(self, call: Call[Params]) -> Result:
        """Run one request; raise GatewayError for the client's mistakes."""


def load_namespaces(config: Config) -> dict[str, Namespace[Any]]:
    """Import each configured plugin package and build its namespace from the config."""
    loaded: dict[str, Namespace[Any]] = {}
    for module_name in config.namespaces:
        module = importlib.import_module(module_name)
        namespace: Namespace[Any] = module.create_namespace(config)
        if namespace.name in loaded:
            raise ValueError(f"namespace {namespace.name} is provided twice")
        loaded[namespace.name] = namespace
    return loaded
