"""Declaring settings: one entry per variable, parsers that say what is wrong, plugin sections."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Parser = Callable[[Any], Any]


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One configuration entry: its field, variable, parser and help line."""

    name: str
    parse: Parser
    help: str
    shown_default: str | None = None  # for defaults that depend on the machine
    secret: bool = False  # its value never appears in an error message
    variable: str | None = None  # the environment variable, when not SAMI_<NAME> (e.g. CC)

    @property
    def env(self) -> str:
        return self.variable or "SAMI_" + self.name.upper()


@dataclass(frozen=True)
class Section:
    """A plugin's own settings, read from the same SAMI_* variables, TOML file and flags as the
    core's (at the file's top level or in its `[name]` table) and handed to the plugin as `values`."""

    name: str
    settings: tuple[Setting, ...]
    values: Callable[..., Any]  # a frozen dataclass whose fields are the settings' names
    defaults: Callable[[Mapping[str, str]], dict[str, Any]] = field(default=lambda environ: {})


def user_cache_dir(environ: Mapping[str, str]) -> Path:
    """This project's directory in the platform's user cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sami-gateway"


def split(value: Any) -> list[str]:
    """A comma-separated string or a list of strings, stripped, empty items dropped."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise ValueError("expected a comma-separated string or a list of strings")


def positive(kind: Callable[[Any], Any]) -> Parser:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError("must be positive")
        return number
    return parse


def http_url(value: Any) -> str:
    """An http(s) URL without a trailing slash, or '' (unset)."""
    text = str(value).rstrip("/")
    if text and not text.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return text


def bounded_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"must be {low}..{high}")
        return number
    return parse


def choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in options:
            raise ValueError(f"must be {' or '.join(options)}")
        return text
    return parse


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("must be true or false")
    return text in ("1", "true", "yes", "on")


def url(value: Any) -> str:
    """An http(s) URL ending in `/`, to which file names are appended."""
    text = str(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return text if text.endswith("/") else text + "/"


def read_values(settings: tuple[Setting, ...], sources: tuple[tuple[str, Mapping[str, Any]], ...],
                values: dict[str, Any]) -> dict[str, Any]:
    """Each setting parsed from each source in order, the later one winning; the error names the variable."""
    for setting in settings:
        for source, found in sources:
            raw = found.get(setting.env if source == "env" else setting.name)
            if raw is None:
                continue
            try:
                values[setting.name] = setting.parse(raw)
            except (TypeError, ValueError) as exc:
                shown = "(hidden)" if setting.secret else repr(raw)
                raise ConfigError(f"{setting.env} ({source}): invalid value {shown}: {exc}") from exc
    return values


def table_rows(settings: tuple[Setting, ...], defaults: Any) -> list[str]:
    """The README's rows for `settings`, defaults read from an instance of their values."""
    rows = []
    for setting in settings:
        default = setting.shown_default or getattr(defaults, setting.name)
        if isinstance(default, Mapping):
            default = ",".join(f"{k}={v}" for k, v in default.items()) or "(none)"
        elif isinstance(default, tuple):
            default = ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in default) or "(none)"
        cells = (f"`{setting.env}`", f"`{default}`", setting.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows
