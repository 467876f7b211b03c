"""A namespace that runs jobs without a model: its stems are transformations of the input bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sami_gateway.errors import Code, error
from sami_gateway.runtime.namespace import Call, JobCall, JobOutput, Result, RunReport, StemFile
from sami_gateway.runtime.scheduler import Scheduler

NS = "Echo"
STEMS = ("upper", "lower", "reversed")


@dataclass(frozen=True)
class EchoParams:
    stems: tuple[str, ...]
    delay: float
    grow: int = 0  # write each stem this many bytes at a time, `delay` seconds apart, readable as it grows


class InvokeOnly:
    """A namespace with invoke's face only (it runs no jobs): every invoke answers its input back."""

    name = "Plain"
    needs_input = True
    max_input_bytes = 100_000

    def parse(self, payload: Mapping[str, Any]) -> str:
        return ""

    async def start(self, scheduler: Scheduler) -> None: ...

    async def stop(self) -> None: ...

    def load_seconds(self) -> Mapping[str, float]:
        return {}

    async def run(self, call: Call[str]) -> Result:
        return Result(bytes(call.data), {}, RunReport(self.name.lower(), 1.0))


class EchoJobs(InvokeOnly):
    """`upper`, `lower` and `reversed` copies of the input; `delay` seconds per stem; input `fail` fails."""

    name = NS

    def __init__(self) -> None:
        self.runs = 0
        self.forgotten: list[tuple[str, str]] = []  # (appkey, job id) of each forget_job

    def parse_job(self, request: Mapping[str, Any]) -> EchoParams:
        unknown = set(request) - {"model", "stems", "output"}
        stems = request.get("stems", list(STEMS))
        if unknown or not isinstance(stems, list) or not stems or not set(stems) <= set(STEMS):
            raise error(Code.ILLEGAL_PAYLOAD, f"stems must be among {STEMS}")
        output = request.get("output") or {}
        delay = output.get("delay", 0.0) if isinstance(output, dict) else 0.0
        grow = output.get("grow", 0) if isinstance(output, dict) else 0
        return EchoParams(tuple(stems), float(delay), int(grow))

    def job_fields(self, params: EchoParams) -> Mapping[str, Any]:
        return {"model": "echo", "stems": list(params.stems),
                "output": {"delay": params.delay, **({"grow": params.grow} if params.grow else {})}}

    def job_models(self) -> Mapping[str, Any]:
        return {"default_model": "echo",
                "models": [{"name": "echo", "kind": "echo", "description": "copies of the input",
                            "sources": list(STEMS), "stems": list(STEMS), "default_stems": list(STEMS)}],
                "output": {"formats": ["wav"], "default": {"format": "wav", "sample_rate": 44100, "channels": 2},
                           "sample_rate_range": {"min": 8000, "max": 48000}, "sample_rates": {},
                           "channels": [1, 2]}}

    async def run_job(self, call: JobCall[EchoParams]) -> JobOutput:
        self.runs += 1
        data = bytes(call.data)
        if data.startswith(b"fail"):
            raise error(Code.ILLEGAL_DATA, "not audio")
        made = {"upper": data.upper(), "lower": data.lower(), "reversed": data[::-1]}
        stems = {}
        for index, stem in enumerate(call.params.stems):
            path = call.workdir / f"{stem}.txt"
            if call.params.grow:
                await self._grow(call, stem, path, made[stem])
            else:
                await asyncio.sleep(call.params.delay)
                path.write_bytes(made[stem])
            stems[stem] = StemFile(path, "txt", len(data) / 10)
            call.progress(100 * (index + 1) / len(call.params.stems),
                          {name: len(data) / 10 if name in stems else 0.0 for name in call.params.stems})
        return JobOutput(stems, {"format": "txt", "sample_rate": 10, "channels": 1, "duration": len(data) / 10},
                         RunReport("echo", len(data) / 10))

    @staticmethod
    async def _grow(call: JobCall[EchoParams], stem: str, path: Path, content: bytes) -> None:
        with open(path, "wb", buffering=0) as handle:
            call.growing(stem, path)
            for start in range(0, len(content), call.params.grow):
                handle.write(content[start:start + call.params.grow])
                await asyncio.sleep(call.params.delay)

    async def forget_job(self, appkey: str, job_id: str) -> None:
        self.forgotten.append((appkey, job_id))
