"""The SDK installs and imports as a client only: httpx, and no torch, numpy, codecs or gateway."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"
HEAVY = ("torch", "numpy", "soundfile", "av", "sami-gateway", "sami_gateway", "demucs", "aiohttp")


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_installed_distribution_requires_httpx_only() -> None:
    assert importlib.metadata.version("sami-gateway-client") == "0.1.0"
    names = requirement_names(importlib.metadata.requires("sami-gateway-client") or [])
    assert names == {"httpx"}
    assert not names & set(HEAVY)


def test_importing_the_sdk_loads_nothing_heavy() -> None:
    code = ("import sys, sami_client; from sami_client import SamiClient, AsyncSamiClient, verify_webhook;"
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SDK.parent)  # not the repository root


def test_the_command_line_does_not_load_the_sdk_until_a_jobs_action_runs() -> None:
    code = ("import sys, sami_gateway.cli.main; sami_gateway.cli.main.build_parser();"
            "loaded = [m for m in ('httpx', 'sami_client') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SDK.parents[1])


@pytest.mark.timeout(120)
def test_the_built_wheel_is_typed_and_requires_httpx_only(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so the build leaves nothing in the work tree
    shutil.copytree(SDK, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sami_gateway_client-0.1.0-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        metadata = archive.read("sami_gateway_client-0.1.0.dist-info/METADATA").decode()
    assert {"sami_client/__init__.py", "sami_client/py.typed", "sami_client/client.py", "sami_client/aio.py"} <= files
    assert not any(name.startswith(("sami_gateway/", "namespaces/", "tests/")) for name in files)
    requires = [line.partition(":")[2].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requirement_names(requires) == {"httpx"}
    assert "Requires-Python: >=3.11" in metadata
