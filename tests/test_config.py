"""Configuration: sources and their precedence, and refusals that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from namespaces.music_source_separate.settings import SeparationSettings
from sami_gateway.config import Config, ConfigError, load_config, settings_table_markdown
from sami_gateway.config.cluster import cluster_settings

ROOT = Path(__file__).resolve().parent.parent
SECRET = {"SAMI_TOKEN_SECRET": "k" * 32}


def separation(config: Config) -> SeparationSettings:
    settings = config.sections["music_source_separate"]
    assert isinstance(settings, SeparationSettings)
    return settings


def test_defaults() -> None:
    config = load_config({}, SECRET)
    assert (config.host, config.port, separation(config).max_audio_seconds) == ("127.0.0.1", 8080, 600.0)
    assert separation(config).model_map["2track_vocal"] == "htdemucs_ft:vocals"
    assert separation(config).model_map["bs_4track_acc"] == "htdemucs"
    assert separation(config).model_dir == Path.home() / ".cache" / "sami-gateway" / "models"


def test_plugin_settings_read_from_its_table_and_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('device = "cuda:1"\n[music_source_separate]\nprecision = "exact"\nthreads = 3\n')
    env = {**SECRET, "SAMI_CONFIG": str(file), "SAMI_THREADS": "5", "XDG_CACHE_HOME": str(tmp_path),
           "CC": "ccache gcc"}
    settings = separation(load_config({}, env))
    assert (settings.device, settings.precision, settings.threads) == ("cuda:1", "exact", 5)
    assert settings.model_dir == tmp_path / "sami-gateway" / "models"
    assert settings.kernel_dir == tmp_path / "sami-gateway" / "native"
    assert settings.compiler == ("ccache", "gcc")
    file.write_text("[music_source_separate]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config({}, env)


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('port = 1000\nhost = "0.0.0.0"\nfetch_allow = ["10.0.0.0/8"]\n'
                    '[appkeys.alpha]\nnamespaces = ["MusicSourceSeparate"]\n[model_map]\n'
                    '2track_vocal = "htdemucs"\n')
    env = {**SECRET, "SAMI_CONFIG": str(file), "SAMI_PORT": "2000"}
    config = load_config({"port": "3000"}, env)
    assert config.port == 3000
    assert load_config({}, env).port == 2000
    assert config.host == "0.0.0.0" and config.fetch_allow == ("10.0.0.0/8",)
    assert config.appkeys["alpha"].allows("MusicSourceSeparate")
    assert not config.appkeys["alpha"].allows("Other")
    assert separation(config).model_map["2track_vocal"] == "htdemucs"
    assert separation(config).model_map["2track_acc"] == "htdemucs_ft:vocals"


def test_appkeys_from_env() -> None:
    config = load_config({}, {**SECRET, "SAMI_APPKEYS": "a, b:Ns1|Ns2"})
    assert config.appkeys["a"].namespaces is None
    assert config.appkeys["b"].namespaces == frozenset({"Ns1", "Ns2"})


@pytest.mark.parametrize(("name", "value"), [
    ("SAMI_PORT", "eighty"), ("SAMI_PORT", "70000"), ("SAMI_FETCH_ALLOW", "10.0.0.0/99"),
    ("SAMI_MAX_AUDIO_SECONDS", "-1"), ("SAMI_MODEL_MAP", "5track=htdemucs"), ("SAMI_DEVICE", "tpu"),
])
def test_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({}, {**SECRET, name: value})


def test_secret_is_required_and_long_enough() -> None:
    with pytest.raises(ConfigError, match="SAMI_TOKEN_SECRET"):
        load_config({}, {"SAMI_TOKEN_SECRET": "short"})
    assert load_config({}, {}, need_secret=False).token_secret == ""


@pytest.mark.parametrize("given", ["SAMI_STORAGE_READ_ACCESS_KEY_ID", "SAMI_STORAGE_READ_SECRET_ACCESS_KEY"])
def test_a_read_only_storage_key_needs_both_halves(given: str) -> None:
    with pytest.raises(ConfigError, match="SAMI_STORAGE_READ_ACCESS_KEY_ID and SAMI_STORAGE_READ_SECRET_ACCESS_KEY"):
        load_config({}, {**SECRET, given: "reader-0123456789"})
    both = load_config({}, {**SECRET, "SAMI_STORAGE_READ_ACCESS_KEY_ID": "reader",
                            "SAMI_STORAGE_READ_SECRET_ACCESS_KEY": "reader-secret"})
    assert cluster_settings(both).storage_read_access_key_id == "reader"
    assert cluster_settings(both).storage_read_secret_access_key == "reader-secret"
    assert "reader-secret" not in repr(cluster_settings(both))  # nor in a log line that shows the settings


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config({}, {**SECRET, "SAMI_CONFIG": str(file)})


def test_config_is_frozen() -> None:
    config = load_config({}, SECRET)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_the_configuration_page_lists_every_setting() -> None:
    assert settings_table_markdown() in (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize(("name", "value"), [
    ("SAMI_TOKEN_TTL", "0"), ("SAMI_TOKEN_TTL", "86401"), ("SAMI_APPKEYS", "a b"),
    ("SAMI_APPKEYS", "k&x"), ("SAMI_APPKEYS", "k:"), ("SAMI_APPKEYS", "k:Ns|"),
])
def test_bad_ttl_and_appkeys(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({}, {**SECRET, name: value})


def test_a_core_setting_in_a_namespaces_table_is_the_cores(tmp_path: Path) -> None:
    """`retain_freed_memory` was once read from `[music_source_separate]`: a file that sets it there still loads."""
    file = tmp_path / "old.toml"
    file.write_text("[music_source_separate]\nretain_freed_memory = false\n")
    assert load_config({}, {**SECRET, "SAMI_CONFIG": str(file)}).retain_freed_memory is False
    assert load_config({}, SECRET).retain_freed_memory is True
