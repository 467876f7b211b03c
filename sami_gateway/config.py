"""Configuration: built once from defaults, a TOML file, SAMI_* variables and flags."""

from __future__ import annotations

import ipaddress
import os
import re
import resource
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .access_keys import AccessKey, parse_access_keys
from .quota import Quota

MIN_SECRET_LENGTH = 32  # HS256 wants a key at least as long as its 256-bit output
MAX_TOKEN_TTL = 24 * 3600  # SAMI caps token lifetime at one day
MAX_INPUT_CHANNELS = 32  # more than stereo is downmixed; this bounds memory per second of audio
DEFAULT_KID = "k1"
DEFAULT_QUOTA = Quota(rate=20.0, burst=40, concurrent=8)  # generous: quotas guard against one key starving others
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
OFFICIAL_MODEL_URL = "https://dl.fbaipublicfiles.com/demucs/"
DEFAULT_MODEL_MAP = MappingProxyType({
    # The 2track models run only the vocals specialist of the htdemucs_ft bag.
    "2track_vocal": "htdemucs_ft:vocals",
    "2track_acc": "htdemucs_ft:vocals",
    "bs_4track_vocal": "htdemucs",
    "bs_4track_acc": "htdemucs",
})


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class AppKey:
    """An application key, the namespaces it may call (None: all of them) and its own quota."""

    name: str
    namespaces: frozenset[str] | None = None
    quota: Quota | None = None  # None: the default quota

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


@dataclass(frozen=True)
class Config:
    """Everything the gateway reads from its environment, as data."""

    host: str = "127.0.0.1"
    port: int = 8080
    appkeys: Mapping[str, AppKey] = field(default_factory=lambda: MappingProxyType({}))
    access_keys: Mapping[str, AccessKey] = field(default_factory=lambda: MappingProxyType({}))
    token_secret: str = ""
    token_kid: str = DEFAULT_KID
    token_previous_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token_ttl: int = 3600
    namespaces: tuple[str, ...] = ("namespaces.music_source_separate",)
    fetch_allow: tuple[str, ...] = ()
    fetch_connect_timeout: float = 5.0
    fetch_timeout: float = 60.0
    max_input_bytes: int = 100 * 1024 * 1024
    max_audio_seconds: float = 600.0
    max_input_channels: int = 2
    request_timeout: float = 900.0
    body_timeout: float = 120.0
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_connections: int = field(default_factory=lambda: default_max_connections())
    max_jobs: int = field(default_factory=lambda: default_max_jobs())
    max_queued_seconds: float = field(default_factory=lambda: default_max_queued_seconds())
    shutdown_grace: float = 60.0
    model_dir: Path = Path("~/.cache/sami-gateway/models")
    model_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_MODEL_MAP)
    model_url: str = OFFICIAL_MODEL_URL
    device: str = "cpu"
    precision: str = "fast"
    threads: int = 0
    quota_rate: float = DEFAULT_QUOTA.rate
    quota_burst: int = DEFAULT_QUOTA.burst
    quota_concurrent: int = DEFAULT_QUOTA.concurrent
    log_level: str = "INFO"

    @property
    def default_quota(self) -> Quota:
        return Quota(self.quota_rate, self.quota_burst, self.quota_concurrent)


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


def default_max_queued_seconds() -> float:
    """Audio-seconds admitted at once: about 4 MB of buffers per second of audio, half the memory."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        memory = 8 * 2**30
    return float(min(7200, memory // 2 // (4 * 2**20)))


def user_cache_dir(environ: Mapping[str, str]) -> Path:
    """This project's directory in the platform's user cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sami-gateway"


def default_model_dir(environ: Mapping[str, str]) -> Path:
    """The platform's user cache directory, as Demucs users expect it."""
    return user_cache_dir(environ) / "models"


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise ValueError("expected a comma-separated string or a list of strings")


def _quota(spec: Mapping[str, Any], default: Quota) -> Quota:
    return Quota(float(spec.get("rate", default.rate)), int(spec.get("burst", default.burst)),
                 int(spec.get("concurrent", default.concurrent)))


def _appkey(name: str, allowed: list[str] | None, quota: Quota | None = None) -> AppKey:
    # Go clients put the appkey unescaped in the query: only URL-safe characters work there.
    if not _URL_SAFE.fullmatch(name):
        raise ValueError(f"appkey {name!r} must be made of A-Z a-z 0-9 - _ . ~")
    if allowed is not None and not all(allowed):
        raise ValueError(f"appkey {name!r} has an empty namespace list")
    return AppKey(name, None if allowed is None else frozenset(allowed), quota)


def _appkeys(value: Any) -> Mapping[str, AppKey]:
    """`K1,K2:NsA|NsB` from the environment, or a TOML table {K = {namespaces = [...]}}."""
    keys: dict[str, AppKey] = {}
    if isinstance(value, dict):
        for name, spec in value.items():
            spec = spec if isinstance(spec, dict) else {}
            allowed = spec.get("namespaces")
            quota = _quota(spec, DEFAULT_QUOTA) if {"rate", "burst", "concurrent"} & set(spec) else None
            keys[name] = _appkey(name, None if allowed is None else _split(allowed) or [""], quota)
        return MappingProxyType(keys)
    for item in _split(value):
        name, colon, allowed = item.partition(":")
        keys[name] = _appkey(name, allowed.split("|") if colon else None)
    return MappingProxyType(keys)


def _fetch_allow(value: Any) -> tuple[str, ...]:
    entries = tuple(_split(value))
    for entry in entries:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)
    return entries


def _model_map(value: Any) -> Mapping[str, str]:
    """`2track_vocal=htdemucs_ft:vocals,...` or a TOML table; unnamed models keep their default."""
    pairs = dict(value) if isinstance(value, dict) else dict(
        item.split("=", 1) for item in _split(value))
    merged = dict(DEFAULT_MODEL_MAP)
    for key, target in pairs.items():
        if key not in DEFAULT_MODEL_MAP or not isinstance(target, str) or not target:
            raise ValueError(f"unknown SAMI model {key!r} or empty target")
        merged[key] = target
    return MappingProxyType(merged)


def _kid(text: str) -> str:
    if not _URL_SAFE.fullmatch(text):
        raise ValueError("a key id is made of A-Z a-z 0-9 - _ . ~")
    return text


def _previous_keys(value: Any) -> Mapping[str, str]:
    pairs = dict(value) if isinstance(value, dict) else dict(item.split(":", 1) for item in _split(value))
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


def _url(value: Any) -> str:
    text = str(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return text if text.endswith("/") else text + "/"


def _positive(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError("must be positive")
        return number
    return parse


def _channels(value: Any) -> int:
    channels = int(value)
    if not 1 <= channels <= MAX_INPUT_CHANNELS:
        raise ValueError(f"must be 1..{MAX_INPUT_CHANNELS}")
    return channels


def _port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be 0..65535")
    return port


def _precision(value: Any) -> str:
    text = str(value).lower()
    if text not in ("exact", "fast"):
        raise ValueError("must be exact or fast")
    return text


def _device(value: Any) -> str:
    text = str(value)
    if text != "cpu" and not text.startswith("cuda"):
        raise ValueError("must be cpu or cuda[:N]")
    return text


@dataclass(frozen=True)
class Setting:
    """One configuration entry: its field, variable, parser and help line."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    shown_default: str | None = None  # for defaults that depend on the machine
    secret: bool = False  # its value never appears in an error message

    @property
    def env(self) -> str:
        return "SAMI_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "address to listen on"),
    Setting("port", _port, "port to listen on"),
    Setting("appkeys", _appkeys, "allowed appkeys, comma-separated; `KEY:NsA|NsB` limits a key to namespaces"),
    Setting("access_keys", lambda v: MappingProxyType(parse_access_keys(v)),
            "GetToken credentials, `AK:SK:appkey1|appkey2,...` (TOML: `[access_keys.AK]`)", secret=True),
    Setting("token_secret", str, f"HS256 secret for tokens (at least {MIN_SECRET_LENGTH} characters)"),
    Setting("token_kid", lambda v: _kid(str(v)), "key id of SAMI_TOKEN_SECRET, written in each token's header"),
    Setting("token_previous_keys", _previous_keys,
            "keys that still verify after a rotation, `kid:secret,...`", secret=True),
    Setting("token_ttl", _ttl, "default token lifetime in seconds for `sami-gateway token` (at most a day)"),
    Setting("namespaces", lambda v: tuple(_split(v)), "namespace plugin modules to load"),
    Setting("fetch_allow", _fetch_allow, "hosts or CIDRs that `payload.url` may reach despite being private"),
    Setting("fetch_connect_timeout", _positive(float), "seconds to connect for `payload.url`"),
    Setting("fetch_timeout", _positive(float), "total seconds to download `payload.url`"),
    Setting("max_input_bytes", _positive(int), "largest input accepted, in bytes (SAMI: 100 MB)"),
    Setting("max_audio_seconds", _positive(float), "longest audio accepted, in seconds (SAMI: 10 minutes)"),
    Setting("max_input_channels", _channels,
            f"input channels accepted (SAMI: mono or stereo); up to {MAX_INPUT_CHANNELS}, downmixed to stereo"),
    Setting("request_timeout", _positive(float), "seconds an invoke may take before it is answered 504"),
    Setting("body_timeout", _positive(float),
            "seconds a client has to send its whole request body (100 MB of base64 at 10 Mbit/s: 107 s); "
            "slower bodies are answered 408"),
    Setting("header_timeout", _positive(float),
            "seconds a client has to send a request's headers; a connection that trickles them is closed"),
    Setting("keepalive_timeout", _positive(float), "seconds an idle keep-alive connection stays open"),
    Setting("max_connections", _positive(int), "open connections at once; past it new ones get a 503 and are closed",
            "half the file descriptor limit, at most 4096"),
    Setting("max_jobs", _positive(int), "requests admitted at once; more are refused 503", "4 per core"),
    Setting("max_queued_seconds", _positive(float), "audio-seconds admitted at once; more are refused 503",
            "memory / 2 / 4 MiB, at most 7200"),
    Setting("shutdown_grace", _positive(float), "seconds SIGTERM waits for admitted requests"),
    Setting("model_dir", lambda v: Path(v).expanduser(), "model store in Demucs's layout"),
    Setting("model_url", _url, "where `sami-gateway models fetch` downloads layers (Demucs's official root)"),
    Setting("model_map", _model_map, "SAMI model to Demucs model[:only_stem], e.g. `2track_vocal=htdemucs_ft:vocals`"),
    Setting("device", _device, "torch device for inference"),
    Setting("precision", _precision, "inference precision: `exact` (fp32) or `fast` (bf16/fp16 where supported)"),
    Setting("threads", lambda v: max(0, int(v)), "torch threads for inference (0: one per core)"),
    Setting("quota_rate", _positive(float), "requests per second per appkey, on average (`[appkeys.K] rate`)"),
    Setting("quota_burst", _positive(int), "requests an appkey may send at once above the rate (`burst`)"),
    Setting("quota_concurrent", _positive(int), "requests an appkey may have in flight (`concurrent`)"),
    Setting("log_level", lambda v: str(v).upper(), "logging level"),
)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"SAMI_CONFIG: cannot read {path}: {exc}") from exc


def load_config(flags: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None,
                *, need_secret: bool = True) -> Config:
    """Merge defaults < TOML file (SAMI_CONFIG or flag `config`) < SAMI_* < flags."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_path = flags.pop("config", None) or environ.get("SAMI_CONFIG")
    file_values = _read_file(config_path) if config_path else {}
    unknown = set(file_values) - {s.name for s in SETTINGS}
    if unknown:
        raise ConfigError(f"SAMI_CONFIG: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {"model_dir": default_model_dir(environ)}
    for setting in SETTINGS:
        for source, raw in (("file", file_values.get(setting.name)),
                            ("env", environ.get(setting.env)),
                            ("flag", flags.get(setting.name))):
            if raw is None:
                continue
            try:
                values[setting.name] = setting.parse(raw)
            except (TypeError, ValueError) as exc:
                shown = "(hidden)" if setting.secret or setting.name == "token_secret" else repr(raw)
                raise ConfigError(f"{setting.env} ({source}): invalid value {shown}: {exc}") from exc
    config = Config(**values)
    if need_secret and len(config.token_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"SAMI_TOKEN_SECRET must be set to at least {MIN_SECRET_LENGTH} characters")
    return config


def settings_table_markdown() -> str:
    """The configuration table for the README (kept in sync by a test)."""
    defaults = Config(model_dir=Path("~/.cache/sami-gateway/models"))
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = setting.shown_default or getattr(defaults, setting.name)
        if isinstance(default, Mapping):
            default = ",".join(f"{k}={v}" for k, v in default.items()) or "(none)"
        elif isinstance(default, tuple):
            default = ",".join(default) or "(none)"
        cells = (f"`{setting.env}`", f"`{default}`", setting.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)
