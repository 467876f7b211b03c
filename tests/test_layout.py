"""The gateway core never imports torch; namespaces are plugins it loads by name."""

from __future__ import annotations

import subprocess
import sys


def test_core_does_not_import_torch() -> None:
    code = ("import sys, sami_gateway.app, sami_gateway.cli, sami_gateway.invoke;"
            "assert 'torch' not in sys.modules, 'torch imported';"
            "assert not any(m.startswith('namespaces') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
