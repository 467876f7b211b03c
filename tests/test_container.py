"""The Dockerfile's promises, checked without a container engine.

No engine runs in CI, so the image is not built here. What can be checked is:
the instructions themselves (non-root user, model volume, what gets copied in),
and that its HEALTHCHECK command, run as written, tells a live gateway from a dead port.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib

from tests.conftest import ROOT, Gateway, free_port


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "") for row in rows]


def env_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for name, args in instructions():
        if name == "ENV":
            values.update(item.split("=", 1) for item in shlex.split(args))
    return values


def test_runs_as_a_non_root_user_after_installing() -> None:
    steps = instructions()
    users = [i for i, (name, _) in enumerate(steps) if name == "USER"]
    assert users, "no USER instruction: the service would run as root"
    user = steps[users[-1]][1]
    assert user not in ("root", "0") and not user.startswith("0:")
    last_run = max(i for i, (name, _) in enumerate(steps) if name == "RUN")
    assert users[-1] > last_run, "the non-root USER must come after the installs"


def test_model_store_is_a_volume_and_the_command_serves() -> None:
    steps = dict(instructions())
    assert env_values()["SAMI_MODEL_DIR"] in steps["VOLUME"]
    assert steps["CMD"] == '["sami-gateway", "serve"]'
    assert env_values()["SAMI_HOST"] == "0.0.0.0"  # reachable through the published port
    assert steps["EXPOSE"] == env_values()["SAMI_PORT"]


def test_only_the_service_is_copied_in() -> None:
    copied = {source for name, args in instructions() if name == "COPY" for source in args.split()[:-1]}
    # The service and the SDK its `jobs` command needs; no tests, bench, stores.
    assert copied == {"constraints.txt", "pyproject.toml", "README.md", "sami_gateway", "namespaces", "sdk/python"}
    installs = " ".join(args for name, args in instructions() if name == "RUN")
    assert "pip install -c constraints.txt ./sdk/python ." in installs  # the versions CI tested
    assert "[test]" not in installs and "[bench]" not in installs


def test_jobs_keep_their_data_on_a_volume() -> None:
    volumes = " ".join(args for name, args in instructions() if name == "VOLUME")
    assert env_values()["SAMI_DATA_DIR"] == "/data" and '"/data"' in volumes


def health_command() -> list[str]:
    args = dict(instructions())["HEALTHCHECK"]
    command = args.split(" CMD ", 1)[1]
    return [sys.executable if word == "python" else word for word in shlex.split(command)]


def test_healthcheck_command_tells_a_live_gateway_from_a_dead_port(gateway: Gateway) -> None:
    port = gateway.url.rsplit(":", 1)[1]
    live = subprocess.run(health_command(), env={**os.environ, "SAMI_PORT": port}, timeout=10, check=False)
    assert live.returncode == 0
    dead = subprocess.run(health_command(), env={**os.environ, "SAMI_PORT": str(free_port())},
                          capture_output=True, timeout=10, check=False)
    assert dead.returncode != 0


def test_the_image_ships_and_prebuilds_the_native_kernel() -> None:
    """`pip install .` must carry attention.c, and the image builds it where the service looks."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.c" in data["namespaces.music_source_separate.engine"]
    installs = " ".join(args for name, args in instructions() if name == "RUN")
    cache = env_values()["XDG_CACHE_HOME"]
    assert "gcc" in installs and f"native.build('{cache}/sami-gateway/native')" in installs
    assert f"chown -R sami {cache}" in installs  # handed to the service user
