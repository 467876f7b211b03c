"""The gateway core never imports torch; namespaces are plugins it loads by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_does_not_import_torch() -> None:
    code = ("import sys, sami_gateway.app, sami_gateway.cli, sami_gateway.invoke;"
            "assert 'torch' not in sys.modules, 'torch imported';"
            "assert not any(m.startswith('namespaces') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_starts_without_codecs_or_torch() -> None:
    """Every `sami-gateway` command builds the parser, plugin commands included: nothing heavy loads."""
    code = ("import sys, sami_gateway.cli; sami_gateway.cli.build_parser();"
            "loaded = [m for m in ('torch', 'numpy', 'av', 'soundfile') if m in sys.modules];"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_lint_and_types() -> None:
    """ruff on the whole tree, mypy (strict) on the gateway core."""
    subprocess.run([sys.executable, "-m", "ruff", "check", "."], check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "mypy", "sami_gateway"], check=True, cwd=ROOT)
