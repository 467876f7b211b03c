"""The audio library stands apart from the service: no gateway import, no environment read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import namespaces.music_source_separate.audio as audio

LIBRARY = Path(audio.__file__).parent
MODULES = sorted(LIBRARY.glob("*.py"))
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def test_the_library_is_all_here() -> None:
    names = {path.stem for path in MODULES}
    assert {"__init__", "errors", "sniff", "framing", "decode", "convert", "encode"} <= names


def imported(tree: ast.Module) -> list[str]:
    """Every module an import statement names; relative ones as dots and name."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_gateway_import_and_no_environment(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source, str(path))
    for name in imported(tree):
        assert name.split(".")[0] != "sami_gateway", f"{path.name} imports {name}"
        assert not name.startswith(".."), f"{path.name} imports {name}, outside the library"
    mentioned = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    mentioned |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    mentioned |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not mentioned & ENVIRONMENT, f"{path.name} reads the environment"
    assert "os.environ" not in source and "getenv" not in source


def test_importing_the_library_loads_no_gateway() -> None:
    modules = ", ".join(f"namespaces.music_source_separate.audio.{path.stem}" for path in MODULES
                        if path.stem != "__init__")
    code = f"import sys, {modules}; assert not [m for m in sys.modules if m.startswith('sami_gateway')]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=LIBRARY.parents[2])
