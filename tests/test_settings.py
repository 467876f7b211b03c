"""Settings declarations: the parsers, Setting.env, read_values' precedence and errors, table_rows, user_cache_dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sami_gateway.config.settings import (
    ConfigError,
    Setting,
    boolean,
    bounded_int,
    choice,
    positive,
    read_values,
    split,
    table_rows,
    url,
    user_cache_dir,
)


@pytest.mark.parametrize(("value", "expected"), [
    (" a, b,,c ,", ["a", "b", "c"]),
    ("", []),
    ([" a", "b ", "", "  "], ["a", "b"]),
    ([], []),
])
def test_split(value: Any, expected: list[str]) -> None:
    assert split(value) == expected


@pytest.mark.parametrize("value", [3, None, ["a", 1], ("a", "b"), {"a": "b"}])
def test_split_refuses_other_types(value: Any) -> None:
    with pytest.raises(ValueError, match="comma-separated string or a list of strings"):
        split(value)


def test_positive() -> None:
    assert positive(int)("3") == 3 and positive(int)(7) == 7
    assert positive(float)("0.25") == 0.25
    for parse, value in ((positive(int), "0"), (positive(int), -2), (positive(float), "-0.5"), (positive(float), 0.0)):
        with pytest.raises(ValueError, match="^must be positive$"):
            parse(value)
    with pytest.raises(ValueError):
        positive(int)("1.5")  # the kind's own refusal


def test_bounded_int_includes_both_ends() -> None:
    parse = bounded_int(0, 65535)
    assert (parse("0"), parse(65535), parse(" 80 ")) == (0, 65535, 80)
    for value in ("-1", 65536):
        with pytest.raises(ValueError, match=r"^must be 0\.\.65535$"):
            parse(value)
    with pytest.raises(ValueError):
        parse("eighty")


def test_choice_is_case_insensitive_and_lower_cases() -> None:
    parse = choice("cpu", "cuda")
    assert (parse("CUDA"), parse("cpu")) == ("cuda", "cpu")
    with pytest.raises(ValueError, match="^must be cpu or cuda$"):
        parse("tpu")


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("1", True), ("0", False), (1, True), (0, False),
    (" Yes ", True), ("no", False), ("ON", True), ("off", False), ("true", True), ("False", False),
])
def test_boolean(value: Any, expected: bool) -> None:
    assert boolean(value) is expected


@pytest.mark.parametrize("value", ["", "maybe", "2", "y", None])
def test_boolean_refuses_anything_else(value: Any) -> None:
    with pytest.raises(ValueError, match="^must be true or false$"):
        boolean(value)


def test_url_ends_in_a_slash() -> None:
    assert url("https://models.example/demucs") == "https://models.example/demucs/"
    assert url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/"
    for value in ("ftp://models.example/", "models.example/", "file:///tmp/", ""):
        with pytest.raises(ValueError, match=r"^must be an http\(s\) URL$"):
            url(value)


def test_setting_env() -> None:
    assert Setting("max_jobs", int, "help").env == "SAMI_MAX_JOBS"
    assert Setting("compiler", str, "help", variable="CC").env == "CC"


PORT = Setting("port", bounded_int(0, 65535), "port")
SECRET = Setting("token_secret", str, "secret", secret=True)
STRICT_SECRET = Setting("password", positive(int), "a secret number", secret=True)
COMPILER = Setting("compiler", str, "the C compiler", variable="CC")


def test_read_values_later_sources_win_and_env_is_read_by_variable() -> None:
    sources = (("file", {"port": 1, "compiler": "gcc", "SAMI_PORT": 9}),
               ("env", {"SAMI_PORT": "2", "port": "8", "CC": "clang", "SAMI_COMPILER": "tcc"}),
               ("flag", {"port": None}))  # None: not given
    values = read_values((PORT, COMPILER, SECRET), sources, {"token_secret": "default"})
    assert values == {"port": 2, "compiler": "clang", "token_secret": "default"}
    flagged = read_values((PORT,), (*sources, ("flag", {"port": "3"})), {})
    assert flagged == {"port": 3}


def test_read_values_fills_the_dict_given() -> None:
    defaults: dict[str, Any] = {"port": 8080}
    assert read_values((PORT,), (("env", {}),), defaults) is defaults and defaults == {"port": 8080}


def test_read_values_error_names_the_variable_and_source() -> None:
    with pytest.raises(ConfigError) as caught:
        read_values((PORT,), (("env", {"SAMI_PORT": "eighty"}),), {})
    assert str(caught.value).startswith("SAMI_PORT (env): invalid value 'eighty': ")
    with pytest.raises(ConfigError, match=r"^SAMI_PORT \(file\): invalid value 70000: must be 0\.\.65535$"):
        read_values((PORT,), (("file", {"port": 70000}),), {})
    with pytest.raises(ConfigError, match=r"^CC \(flag\): invalid value"):
        read_values((Setting("compiler", positive(int), "h", variable="CC"),), (("flag", {"compiler": "x"}),), {})
    assert issubclass(ConfigError, ValueError)


def test_read_values_turns_a_type_error_into_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^SAMI_PORT \(file\): invalid value \[80\]"):
        read_values((PORT,), (("file", {"port": [80]}),), {})


def test_a_secret_value_never_appears_in_the_error() -> None:
    """The value is shown as (hidden); the parser's own message follows (so it must not echo the value)."""
    for source, found in (("env", {"SAMI_PASSWORD": "-12345"}), ("file", {"password": -12345})):
        with pytest.raises(ConfigError) as caught:
            read_values((STRICT_SECRET,), ((source, found),), {})
        assert str(caught.value) == f"SAMI_PASSWORD ({source}): invalid value (hidden): must be positive"
    pin = Setting("pin", bounded_int(0, 9999), "a secret pin", secret=True)
    with pytest.raises(ConfigError) as caught:
        read_values((pin,), (("file", {"pin": ["4321"]}),), {})  # a TypeError
    assert str(caught.value).startswith("SAMI_PIN (file): invalid value (hidden): ") and "4321" not in str(caught.value)


@dataclass(frozen=True)
class Defaults:
    port: int = 8080
    namespaces: tuple[str, ...] = ("a.b", "c")
    allow: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=lambda: {"x": 1.0, "y": 2.0})
    previous: dict[str, str] = field(default_factory=dict)
    workers: int = 0


def test_table_rows() -> None:
    settings = (
        Setting("port", int, "port to listen on"),
        Setting("namespaces", split, "packages"),
        Setting("allow", split, "hosts"),
        Setting("weights", str, "weights per model"),
        Setting("previous", str, "old keys"),
        Setting("workers", int, "threads", "one per core"),
        Setting("compiler", str, "a | b", "cc", variable="CC"),
    )
    assert table_rows(settings, Defaults()) == [
        "| `SAMI_PORT` | `8080` | port to listen on |",
        "| `SAMI_NAMESPACES` | `a.b,c` | packages |",
        "| `SAMI_ALLOW` | `(none)` | hosts |",
        "| `SAMI_WEIGHTS` | `x=1.0,y=2.0` | weights per model |",
        "| `SAMI_PREVIOUS` | `(none)` | old keys |",
        "| `SAMI_WORKERS` | `one per core` | threads |",
        "| `CC` | `cc` | a \\| b |",
    ]


def test_user_cache_dir_reads_the_mapping_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "from-os-environ"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir({"XDG_CACHE_HOME": "/var/cache/x"}) == Path("/var/cache/x/sami-gateway")
    assert user_cache_dir({}) == tmp_path / "home" / ".cache" / "sami-gateway"
    assert user_cache_dir({"XDG_CACHE_HOME": ""}) == tmp_path / "home" / ".cache" / "sami-gateway"
