"""The separation library stands apart from the service: no `sami_gateway` import, no environment read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "namespaces" / "music_source_separate"
# The library: inference, the model store, the families' networks, streaming separation, the
# Python API and its defaults. The rest is the namespace's edge, which turns the library into a SAMI namespace and a
# command line and reads the gateway's settings: the modules at its top and the pipeline/ and
# requests/ packages. The audio/ subpackage has its own layering test (audio/test_layering.py).
LIBRARY_PACKAGES = ("engine", "models", "families", "streaming")
LIBRARY_TOP = {"separator.py", "defaults.py"}
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv"}


def library_modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py")
                  if (path.name in LIBRARY_TOP if path.parent == PACKAGE
                      else path.relative_to(PACKAGE).parts[0] in LIBRARY_PACKAGES))


def violations(source: str) -> list[str]:
    """What in `source` imports the gateway or reads the environment, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if node.level == 0 else []
            found += [f"{node.lineno}: {alias.name}" for alias in node.names if alias.name in ENVIRONMENT]
        else:
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            found += [f"{getattr(node, 'lineno', 0)}: {name}"] if name in ENVIRONMENT else []
            continue
        found += [f"{node.lineno}: import {module}" for module in modules
                  if module == "sami_gateway" or module.startswith("sami_gateway.")]
    return found


def test_the_library_is_the_modules_apart_from_the_edge() -> None:
    names = {str(path.relative_to(PACKAGE)) for path in library_modules()}
    assert {"engine/native.py", "engine/inference.py", "engine/denoise.py", "separator.py", "defaults.py",
            "models/repository.py", "models/layout.py", "models/download.py", "models/loaded.py",
            "models/listing.py", "models/layer_header.py", "models/families.py", "families/build.py"} <= names
    assert not any(name.startswith(("audio/", "pipeline/", "requests/")) or "/" not in name
                   and name not in LIBRARY_TOP for name in names)


@pytest.mark.parametrize("path", library_modules(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_gateway_import_and_no_environment(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize("source", [
    "import sami_gateway", "import sami_gateway.config as c", "from sami_gateway.errors import GatewayError",
    "from sami_gateway import config", "import os\nos.environ.get('CC')", "import os\nos.getenv('CC')",
    "from os import environ", "from os import getenv as g",
])
def test_the_check_sees_each_form(source: str) -> None:
    assert violations(source)


def test_the_check_passes_relative_and_other_imports() -> None:
    assert violations("import os\nfrom . import native\nfrom .store import read_bag\nos.replace('a', 'b')\n"
                      "import sami_gateway_other\n") == []
