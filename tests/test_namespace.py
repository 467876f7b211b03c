"""load_namespaces: each configured plugin package imported and asked for its namespace, names unique."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sami_gateway.config import Config, load_config
from sami_gateway.runtime.namespace import load_namespaces

PLUGIN = '''
from dataclasses import dataclass

from sami_gateway.config.settings import Section, Setting, positive

CALLS = []


@dataclass(frozen=True)
class Values:
    speed: float = 1.0


{settings}


class Plugin:
    needs_input = True
    max_input_bytes = 1000

    def __init__(self, name, config):
        self.name = name
        self.config = config


def create_namespace(config):
    CALLS.append(config)
    return Plugin({name!r}, config)
'''
SETTINGS = 'SETTINGS = Section("{section}", (Setting("speed", positive(float), "how fast"),), Values)'


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Write a plugin package providing namespace `name` (with a settings section when given); its module name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def make(name: str, section: str | None = None) -> str:
        module = f"fake_plugin_{uuid.uuid4().hex}"
        package = tmp_path / module
        package.mkdir()
        settings = SETTINGS.format(section=section) if section else ""
        (package / "__init__.py").write_text(PLUGIN.format(settings=settings, name=name))
        written.append(module)
        return module

    yield make
    for module in written:
        sys.modules.pop(module, None)


def config_for(*modules: str, **environ: str) -> Config:
    return load_config({}, {"SAMI_NAMESPACES": ",".join(modules), **environ}, need_secret=False)


def test_each_package_builds_its_namespace_from_the_config(make_plugin: Callable[..., str]) -> None:
    first, second = make_plugin("Alpha"), make_plugin("Beta")
    config = config_for(second, first)
    loaded = load_namespaces(config)
    assert list(loaded) == ["Beta", "Alpha"]  # in the configured order
    for name, module in (("Alpha", first), ("Beta", second)):
        assert sys.modules[module].CALLS == [config]  # called once, with the config
        assert loaded[name].name == name and loaded[name].config is config  # type: ignore[attr-defined]


def test_no_packages_no_namespaces() -> None:
    assert config_for().namespaces == ()
    assert load_namespaces(config_for()) == {}


def test_a_plugin_reads_its_own_settings_section(make_plugin: Callable[..., str]) -> None:
    module = make_plugin("Gamma", section="gamma")
    config = config_for(module, SAMI_SPEED="2.5")
    namespace = load_namespaces(config)["Gamma"]
    assert namespace.config.sections["gamma"] == sys.modules[module].Values(speed=2.5)  # type: ignore[attr-defined]


def test_the_same_namespace_from_two_packages_is_refused(make_plugin: Callable[..., str]) -> None:
    config = config_for(make_plugin("Alpha"), make_plugin("Beta"), make_plugin("Alpha"))
    with pytest.raises(ValueError, match="^namespace Alpha is provided twice$"):
        load_namespaces(config)


def test_the_same_package_twice_is_refused(make_plugin: Callable[..., str]) -> None:
    module = make_plugin("Alpha")
    with pytest.raises(ValueError, match="namespace Alpha is provided twice"):
        load_namespaces(config_for(module, module))
