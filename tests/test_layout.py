"""The gateway core never imports torch; namespaces are plugins it loads by name."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def test_core_does_not_import_torch() -> None:
    code = ("import sys, sami_gateway.app, sami_gateway.cli.main, sami_gateway.invoke.handler;"
            "assert 'torch' not in sys.modules, 'torch imported';"
            "assert not any(m.startswith('namespaces') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_starts_without_codecs_or_torch() -> None:
    """Every `sami-gateway` command builds the parser, plugin commands included: nothing heavy loads."""
    code = ("import sys, sami_gateway.cli.main; sami_gateway.cli.main.build_parser();"
            "loaded = [m for m in ('torch', 'numpy', 'av', 'soundfile') if m in sys.modules];"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_lint_and_types() -> None:
    """ruff on the whole tree, mypy (strict) on the gateway core."""
    subprocess.run([sys.executable, "-m", "ruff", "check", "."], check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "mypy", "sami_gateway"], check=True, cwd=ROOT)


def _top_levels(nodes: list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _guarded(tree: ast.AST) -> set[int]:
    """The import statements inside `try: ... except ImportError`: features that work without them."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(handler.type, ast.Name) and handler.type.id in {"ImportError", "ModuleNotFoundError"}
                for handler in node.handlers):
            guarded |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return guarded


def _imported_top_levels(package: Path) -> set[str]:
    """The top-level module of every absolute import in the package's files (function bodies included),
    except where their absence is handled."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        guarded = _guarded(tree)
        names |= _top_levels([node for node in ast.walk(tree) if id(node) not in guarded])
    return names


def test_every_package_the_code_imports_is_declared() -> None:
    """An import that works only because something else happened to install its package breaks on a
    fresh machine (a pip install of just this project, or the service image)."""
    declared = {canonicalize_name(Requirement(text).name)
                for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    own = {"sami_gateway", "namespaces", "sami_client"}
    missing = {}
    for package in ("sami_gateway", "namespaces"):
        for name in _imported_top_levels(ROOT / package) - set(sys.stdlib_module_names) - own:
            providers = {canonicalize_name(dist) for dist in distributions.get(name, [name])}
            if not providers & declared:
                missing[name] = sorted(providers)
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_covers_every_requirement_and_is_what_is_installed() -> None:
    """Every requirement of the project (all extras) and of the SDK is pinned in constraints.txt,
    inside its range, and the environment the tests run in has exactly those versions
    (`scripts/install.sh` installs within the lock; `bash scripts/lock.sh` refreshes it)."""
    locked = _locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sdk = tomllib.loads((ROOT / "sdk/python/pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"], *sdk["dependencies"],
             *(text for extra in project["optional-dependencies"].values() for text in extra)]
    for requirement in map(Requirement, texts):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in constraints.txt: run bash scripts/lock.sh"
        assert requirement.specifier.contains(locked[name]), f"{requirement} excludes the locked {locked[name]}"
    drift = {}
    for name, version in locked.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this environment did not install (bench)
        if installed.split("+")[0] != version:
            drift[name] = f"locked {version}, installed {installed}"
    assert not drift, f"the environment differs from constraints.txt (run bash scripts/install.sh --test): {drift}"


def _modules() -> dict[str, Path]:
    """Every module of the gateway and the namespace plugins, by dotted name (a package by its own)."""
    found = {}
    for package in ("sami_gateway", "namespaces"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its file (type-only imports too)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        edges = set()
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own parents
                edges.add(target)
        graph[name] = edges
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of nodes that reach each other (a few hundred modules: every pair is cheap)."""
    reach = {node: _reachable(graph, node) for node in graph}
    groups = {tuple(sorted({node} | {other for other in reach[node] if node in reach[other]}))
              for node in graph if node in reach[node]}
    return sorted(list(group) for group in groups)


def _package_of(module: str, modules: dict[str, Path]) -> str:
    """The unit of the package-level graph: the package a module is in, each subpackage its own (the
    Jobs API's routes apart from its core), and each module at the top of the gateway or of a
    namespace plugin on its own."""
    if modules[module].name == "__init__.py":
        return module
    package = module.rpartition(".")[0]
    at_top = package == "sami_gateway" or (package.startswith("namespaces.") and package.count(".") == 1)
    return module if at_top else package


def test_no_import_cycle_between_modules_or_packages() -> None:
    """Each layer imports only those below it: a cycle would make the layers one knot."""
    modules = _modules()
    graph = _import_graph(modules)
    assert _cycles(graph) == [], "modules importing each other"
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        unit = _package_of(module, modules)
        packages.setdefault(unit, set()).update(
            _package_of(target, modules) for target in targets if _package_of(target, modules) != unit)
    assert _cycles(packages) == [], "packages importing each other"


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
