"""The gateway's configuration: built once from defaults, a TOML file, SAMI_* variables and flags.

The core's settings are declared here; each namespace plugin declares its own `Section`
(`SETTINGS` in its package), read from the same sources and kept in `Config.sections`.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import resource
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .access_keys import AccessKey, parse_access_keys
from .cluster import SETTINGS as CLUSTER_SETTINGS
from .jobs import SETTINGS as JOB_SETTINGS
from .jobs import parse_overrides
from .limits import Quota
from .settings import ConfigError as ConfigError  # raised by load_config: its callers import it from here
from .settings import Section, Setting, boolean, bounded_int, positive, read_values, split, table_rows

MIN_SECRET_LENGTH = 32  # HS256 wants a key at least as long as its 256-bit output
MAX_TOKEN_TTL = 24 * 3600  # SAMI caps token lifetime at one day
DEFAULT_KID = "k1"
# Generous: quotas guard against one key starving others (16 streams: a page following a few jobs, and scripts).
DEFAULT_QUOTA = Quota(rate=20.0, burst=40, concurrent=8, streams=16)
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
DEFAULT_NAMESPACES = ("namespaces.music_source_separate",)
CORE_SECTIONS = (JOB_SETTINGS, CLUSTER_SETTINGS)  # the core's own sections, beside the plugins'


@dataclass(frozen=True)
class AppKeyRule:
    """What an appkey may do: the namespaces it may call (None: all of them) and its own quota."""

    name: str
    namespaces: frozenset[str] | None = None
    quota: Quota | None = None  # None: the default quota
    webhook_secret: str | None = None  # None: SAMI_WEBHOOK_SECRET
    storage: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # its own storage limits

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class Config:
    """Everything the gateway reads from its environment, as data."""

    host: str = "127.0.0.1"
    port: int = 8080
    appkeys: Mapping[str, AppKeyRule] = field(default_factory=lambda: MappingProxyType({}))
    access_keys: Mapping[str, AccessKey] = field(default_factory=lambda: MappingProxyType({}))
    token_secret: str = ""
    token_kid: str = DEFAULT_KID
    token_previous_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token_ttl: int = 3600
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    fetch_allow: tuple[str, ...] = ()
    fetch_connect_timeout: float = 5.0
    fetch_timeout: float = 60.0
    max_input_bytes: int = 100 * 1024 * 1024
    max_job_input_bytes: int = 2 * 1024 ** 3
    request_timeout: float = 900.0
    body_timeout: float = 120.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_connections: int = field(default_factory=lambda: default_max_connections())
    max_jobs: int = field(default_factory=lambda: default_max_jobs())
    max_queued_seconds: float = 7200.0
    max_held_bytes: int = field(default_factory=lambda: default_max_held_bytes())
    shutdown_grace: float = 60.0
    worker_nice: int = 10
    quota_rate: float = DEFAULT_QUOTA.rate
    quota_burst: int = DEFAULT_QUOTA.burst
    quota_concurrent: int = DEFAULT_QUOTA.concurrent
    quota_streams: int = DEFAULT_QUOTA.streams
    log_level: str = "INFO"
    retain_freed_memory: bool = True
    sections: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # plugin settings by name

    @property
    def default_quota(self) -> Quota:
        return Quota(self.quota_rate, self.quota_burst, self.quota_concurrent, self.quota_streams)


def default_max_jobs() -> int:
    """Requests admitted at once: a few per core keeps every core busy between chunks."""
    return 4 * (os.cpu_count() or 1)


def default_max_connections() -> int:
    """Open connections at once: each holds a file descriptor, so half the process's limit, at most 4096."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 8192
    return max(16, min(4096, soft // 2))


def default_max_held_bytes() -> int:
    """Memory the admitted invokes may hold at once: half the machine's."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = 8 * 2**30
    return int(memory // 2)


def _quota(spec: Mapping[str, Any], default: Quota) -> Quota:
    return Quota(float(spec.get("rate", default.rate)), int(spec.get("burst", default.burst)),
                 int(spec.get("concurrent", default.concurrent)), int(spec.get("streams", default.streams)))


def _appkey(name: str, allowed: list[str] | None, quota: Quota | None = None,
            webhook_secret: str | None = None, storage: Mapping[str, int] | None = None) -> AppKeyRule:
    # Go clients put the appkey unescaped in the query: only URL-safe characters work there.
    if not _URL_SAFE.fullmatch(name):
        raise ValueError(f"appkey {name!r} must be made of A-Z a-z 0-9 - _ . ~")
    if allowed is not None and not all(allowed):
        raise ValueError(f"appkey {name!r} has an empty namespace list")
    if webhook_secret is not None and (not isinstance(webhook_secret, str) or len(webhook_secret) < 16):
        raise ValueError(f"appkey {name!r}: webhook_secret needs at least 16 characters")
    return AppKeyRule(name, None if allowed is None else frozenset(allowed), quota, webhook_secret,
                      MappingProxyType(dict(storage or {})))


def _appkeys(value: Any) -> Mapping[str, AppKeyRule]:
    """`K1,K2:NsA|NsB` from the environment, or a TOML table {K = {namespaces = [...], rate = ..., ...}}."""
    keys: dict[str, AppKeyRule] = {}
    if isinstance(value, dict):
        for name, spec in value.items():
            spec = spec if isinstance(spec, dict) else {}
            allowed = spec.get("namespaces")
            quota = _quota(spec, DEFAULT_QUOTA) if {"rate", "burst", "concurrent", "streams"} & set(spec) else None
            keys[name] = _appkey(name, None if allowed is None else split(allowed) or [""], quota,
                                 spec.get("webhook_secret"), parse_overrides(spec, name))
        return MappingProxyType(keys)
    for item in split(value):
        name, colon, allowed = item.partition(":")
        keys[name] = _appkey(name, allowed.split("|") if colon else None)
    return MappingProxyType(keys)


def _fetch_allow(value: Any) -> tuple[str, ...]:
    entries = tuple(split(value))
    for entry in entries:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)
    return entries


def _kid(text: str) -> str:
    if not _URL_SAFE.fullmatch(text):
        raise ValueError("a key id is made of A-Z a-z 0-9 - _ . ~")
    return text


def _previous_keys(value: Any) -> Mapping[str, str]:
    pairs = dict(value) if isinstance(value, dict) else dict(item.split(":", 1) for item in split(value))
    for kid, secret in pairs.items():
        _kid(kid)
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"key {kid}: the secret needs at least {MIN_SECRET_LENGTH} characters")
    return MappingProxyType(pairs)


def _ttl(value: Any) -> int:
    ttl = int(value)
    if not 0 < ttl <= MAX_TOKEN_TTL:
        raise ValueError(f"must be 1..{MAX_TOKEN_TTL}")
    return ttl


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "address to listen on"),
    Setting("port", bounded_int(0, 65535), "port to listen on"),
    Setting("appkeys", _appkeys, "allowed appkeys, comma-separated; `KEY:NsA|NsB` limits a key to namespaces"),
    Setting("access_keys", lambda v: MappingProxyType(parse_access_keys(v)),
            "GetToken credentials, `AK:SK:appkey1|appkey2,...` (TOML: `[access_keys.AK]`)", secret=True),
    Setting("token_secret", str, f"HS256 secret for tokens (at least {MIN_SECRET_LENGTH} characters)", secret=True),
    Setting("token_kid", lambda v: _kid(str(v)), "key id of SAMI_TOKEN_SECRET, written in each token's header"),
    Setting("token_previous_keys", _previous_keys,
            "keys that still verify after a rotation, `kid:secret,...`", secret=True),
    Setting("token_ttl", _ttl, "default token lifetime in seconds for `sami-gateway token` (at most a day)"),
    Setting("namespaces", lambda v: tuple(split(v)), "namespace plugin packages to load"),
    Setting("fetch_allow", _fetch_allow, "hosts or CIDRs that `payload.url` may reach despite being private"),
    Setting("fetch_connect_timeout", positive(float), "seconds to connect for `payload.url`"),
    Setting("fetch_timeout", positive(float), "total seconds to download `payload.url`"),
    Setting("max_input_bytes", positive(int), "largest invoke input accepted, in bytes (SAMI: 100 MB)"),
    Setting("max_job_input_bytes", positive(int),
            "largest job input accepted, in bytes: an upload, a form's file or a `url` download, each written "
            "to disk as it arrives (a job's base64 `data` stays within the invoke body's limit)"),
    Setting("request_timeout", positive(float), "seconds an invoke may take before it is answered 504"),
    Setting("body_timeout", positive(float),
            "seconds a client has to send its whole request body (100 MB of base64 at 10 Mbit/s: 107 s); "
            "slower bodies are answered 408"),
    Setting("header_timeout", positive(float),
            "seconds a client has to send a request's headers; a connection that trickles them is closed"),
    Setting("keepalive_timeout", positive(float), "seconds an idle keep-alive connection stays open"),
    Setting("max_connections", positive(int), "open connections at once; past it new ones get a 503 and are closed",
            "half the file descriptor limit, at most 4096"),
    Setting("max_jobs", positive(int), "requests admitted at once; more are refused 503", "4 per core"),
    Setting("max_queued_seconds", positive(float), "audio-seconds admitted at once; more are refused 503"),
    Setting("max_held_bytes", positive(int),
            "bytes of memory the admitted invokes hold at once, each counted from its decoded input (the "
            "input, the mix at the model's rate, the sources at the cache's precision, the output); more are "
            "refused 503", "half the memory"),
    Setting("shutdown_grace", positive(float), "seconds SIGTERM waits for admitted requests"),
    Setting("worker_nice", bounded_int(0, 19), "how many steps below the event loop inference and audio threads run "
            "(nice), so the loop keeps a core when they fill them all"),
    Setting("quota_rate", positive(float), "requests per second per appkey, on average (`[appkeys.K] rate`)"),
    Setting("quota_burst", positive(int), "requests an appkey may send at once above the rate (`burst`)"),
    Setting("quota_concurrent", positive(int), "requests an appkey may have in flight (`concurrent`)"),
    Setting("quota_streams", positive(int), "event streams and long polls (`?wait=`) an appkey may hold open at once, "
            "each front on its own (`streams`)"),
    Setting("log_level", lambda v: str(v).upper(), "logging level"),
    Setting("retain_freed_memory", boolean, "have glibc keep freed memory for reuse, in one heap for every thread, "
            "and opt the process out of transparent huge pages, set as the process starts (faster inference on "
            "CPU, no event-loop stalls from khugepaged; RSS stays at its peak)"),
)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"SAMI_CONFIG: cannot read {path}: {exc}") from exc


def plugin_sections(namespaces: tuple[str, ...]) -> tuple[Section, ...]:
    """The settings section each namespace package declares (`SETTINGS`), if any."""
    sections = []
    for name in namespaces:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"SAMI_NAMESPACES: cannot import {name}: {exc}") from exc
        section = getattr(module, "SETTINGS", None)
        if isinstance(section, Section):
            sections.append(section)
    return tuple(sections)


def _lift_core_keys(file_values: dict[str, Any]) -> dict[str, Any]:
    """A core setting written in a plugin's table (`retain_freed_memory` was once the namespace's) is read
    as the core's, unless the file's top level sets it too."""
    core = {setting.name for setting in SETTINGS}
    lifted = dict(file_values)
    for table in file_values.values():
        if isinstance(table, dict):
            for key in core & set(table):
                lifted.setdefault(key, table[key])
    return lifted


def _read_sections(namespaces: tuple[str, ...], file_values: Mapping[str, Any], environ: Mapping[str, str],
                   flags: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Each plugin section's values, and the file keys they own (their names and their table)."""
    sections: dict[str, Any] = {}
    owned: set[str] = set()
    for section in CORE_SECTIONS + plugin_sections(namespaces):
        table = file_values.get(section.name)
        table = table if isinstance(table, dict) else {}
        unknown = set(table) - {s.name for s in section.settings} - {s.name for s in SETTINGS}
        if unknown:
            raise ConfigError(f"SAMI_CONFIG: unknown keys {sorted(unknown)} in [{section.name}]")
        sources = (("file", file_values), ("file", table), ("env", environ), ("flag", flags))
        sections[section.name] = section.values(**read_values(section.settings, sources, section.defaults(environ)))
        owned |= {section.name, *(s.name for s in section.settings)}
    return sections, owned


def load_config(flags: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None,
                *, need_secret: bool = True) -> Config:
    """Merge defaults < TOML file (SAMI_CONFIG or flag `config`) < SAMI_* < flags."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_path = flags.pop("config", None) or environ.get("SAMI_CONFIG")
    file_values = _lift_core_keys(_read_file(config_path) if config_path else {})
    values = read_values(SETTINGS, (("file", file_values), ("env", environ), ("flag", flags)), {})
    sections, owned = _read_sections(values.get("namespaces", DEFAULT_NAMESPACES), file_values, environ, flags)
    unknown = set(file_values) - {s.name for s in SETTINGS} - owned
    if unknown:
        raise ConfigError(f"SAMI_CONFIG: unknown keys {sorted(unknown)}")
    config = Config(**values, sections=MappingProxyType(sections))
    if need_secret and len(config.token_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"SAMI_TOKEN_SECRET must be set to at least {MIN_SECRET_LENGTH} characters")
    return config


def settings_table_markdown() -> str:
    """The configuration table for the README, the core's and the default plugins' (kept in sync by a test)."""
    rows = ["| variable | default | meaning |", "|---|---|---|", *table_rows(SETTINGS, Config())]
    for section in CORE_SECTIONS + plugin_sections(DEFAULT_NAMESPACES):
        shown = {"XDG_CACHE_HOME": "~/.cache", "XDG_DATA_HOME": "~/.local/share"}
        rows += table_rows(section.settings, section.values(**section.defaults(shown)))
    return "\n".join(rows)
