"""Fronts and workers as real processes over a real Redis and S3 server, on loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.servers import Server, free_port

STARTUP_SECONDS = 120


@dataclass
class Role:
    """One `serve` or `worker` process: where it answers and its log."""

    kind: str
    url: str  # the front's API, or the worker's /healthz and /metrics
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Stack:
    """Starts fronts and workers sharing `redis` and `s3` under a prefix of their own."""

    redis: Server
    s3: Server
    base_env: dict[str, str]  # the gateway's settings (model store, secret, appkeys...)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sami-stack-")))
    roles: list[Role] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:8]
        self.folder.mkdir(parents=True, exist_ok=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {**self.base_env, **self.s3.env, "SAMI_QUEUE_URL": self.redis.url,
               "SAMI_STORAGE_URL": f"{self.s3.url}/{self.prefix}", "SAMI_DATA_DIR": tempfile.mkdtemp(
                   prefix="sami-role-", dir=self.folder), **self.extra}
        env.update(extra)
        return env

    def _start(self, kind: str, port: int, env: dict[str, str]) -> Role:
        log = self.folder / f"{kind}-{port}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen([sys.executable, "-m", "sami_gateway", kind], env=env,
                                       stdout=handle, stderr=subprocess.STDOUT)
        role = Role(kind, f"http://127.0.0.1:{port}", process, log)
        self.roles.append(role)
        return role

    def front(self, **extra: str) -> Role:
        port = free_port()
        return self._start("serve", port, self.env(SAMI_PORT=str(port), **extra))

    def worker(self, **extra: str) -> Role:
        port = free_port()
        return self._start("worker", port, self.env(SAMI_WORKER_PORT=str(port), **extra))

    def wait_healthy(self, *roles: Role) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        for role in roles:
            while True:
                if role.process.poll() is not None:
                    raise RuntimeError(f"{role.kind} exited with {role.process.returncode}:\n{role.log.read_text()}")
                try:
                    if requests.get(role.url + "/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{role.kind} did not become healthy:\n{role.log.read_text()}")
                time.sleep(0.2)

    def wait_ready(self, front: Role, timeout: float = 60) -> dict[str, object]:
        """Until the front's /readyz says 200 (a worker alive, Redis and storage reachable)."""
        deadline = time.monotonic() + timeout
        body: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                answer = requests.get(front.url + "/readyz", timeout=5)
                body = answer.json()
                if answer.status_code == 200:
                    return body
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"front not ready: {body}\n{front.log.read_text()[-3000:]}")

    def stop(self) -> None:
        for role in self.roles:
            if role.alive():
                role.process.send_signal(signal.SIGTERM)
        for role in self.roles:
            try:
                role.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(role.process.pid, signal.SIGKILL)
                role.process.wait()
