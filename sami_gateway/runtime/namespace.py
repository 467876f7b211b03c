"""The contract between the gateway and a namespace plugin: parse, start, run, stop.

`parse` validates a payload cheaply, before any download, into the namespace's own value;
`run` gets that value back with the input bytes. The invoke handler (and any later entry
point) calls the same two verbs, so nothing is parsed or validated twice.
"""

from __future__ import annotations

import importlib
import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ..config import Config
from .scheduler import Scheduler

Params = TypeVar("Params")
MAX_JOB_STEMS = 64  # the most names a job's `stems` may hold (repeats included), as documented for every namespace
InputBytes = bytes | mmap.mmap  # an input as decoded from `data` (a memory map when large) or downloaded


class FileMap(mmap.mmap):
    """A read-only map of a file on disk: pages already read may be let go (`madvise(MADV_DONTNEED)`),
    as the file holds them; never so for the anonymous maps that hold a decoded `data`, whose pages
    would come back zeroed. Readers check `pages_on_disk`, not the class."""

    pages_on_disk = True


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
    cache_hit: bool | None = None  # answered from a cache of earlier runs (None: the namespace has none)
    cache_bytes: int | None = None  # what that cache holds now
    ran_here: bool = True  # False: run by another process (a scale-out worker), which counted it


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


class ProgressReport(Protocol):
    """How far a job is: a percent (0..100), and the seconds of each stem computed so far when known."""

    def __call__(self, percent: float, ready: Mapping[str, float] | None = None) -> None: ...


@dataclass(frozen=True)
class JobCall(Generic[Params]):
    """One asynchronous job: its parsed request, input bytes, a folder of its own to write result
    files in, where to report progress (0..100, with the seconds of each stem computed so far when
    it knows them, from any thread), and where to name a result file
    as it starts to be written (`growing(stem, path)`, from any thread: its bytes are then served
    while the job runs, so they must never be rewritten, but for a header that a reader of the file
    as it grows can do without, such as an mp3's Info frame)."""

    job_id: str
    appkey: str
    params: Params
    data: InputBytes  # the namespace may `release` it once read
    workdir: Path
    progress: ProgressReport
    growing: Callable[[str, Path], None] = lambda stem, path: None


@dataclass(frozen=True)
class StemFile:
    """One finished result file in the job's workdir."""

    path: Path
    format: str
    duration: float  # seconds


@dataclass(frozen=True)
class JobOutput:
    """A job's results, what its input turned out to be, whether they came from the stem cache,
    and the report the gateway counts."""

    stems: Mapping[str, StemFile]
    input: Mapping[str, Any]  # {"format", "sample_rate", "channels", "duration"}
    report: RunReport
    cache_hit: bool = False


@runtime_checkable
class JobNamespace(Protocol[Params]):
    """A namespace that also runs asynchronous jobs (the Jobs API): several results per input."""

    def parse_job(self, request: Mapping[str, Any]) -> Params:
        """`model`, `stems` and `output` of a job request (the rest is the gateway's) as the
        namespace's value; raise GatewayError (400) for a request that can never succeed."""

    def job_fields(self, params: Params) -> Mapping[str, Any]:
        """The request as the job object shows it, with defaults filled in: `model`, `stems`,
        `output`. `parse_job` of these fields gives `params` back (they are stored, and parsed
        again when a job runs after a restart)."""

    def job_models(self) -> Mapping[str, Any]:
        """What `parse_job` accepts now, for clients to offer (`GET /api/v1/models`): `default_model`,
        `models` (each with its `stems` and `default_stems`) and `output` options. Never loads a
        model; called once per request, on a worker thread."""

    async def run_job(self, call: JobCall[Params]) -> JobOutput:
        """Run one job, writing each result into `call.workdir`; raise GatewayError for bad input."""

    async def forget_job(self, appkey: str, job_id: str) -> None:
        """The job is deleted or expired: remove what the namespace keeps of it (e.g. cached results
        no other job uses), including what a run of it still finishing would keep. Never raises for
        a job it does not know."""


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
