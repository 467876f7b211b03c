"""The namespace's settings of loaded models and the stem cache: defaults and refusals naming the variable."""

from __future__ import annotations

import pytest

from namespaces.music_source_separate.settings import SeparationSettings
from sami_gateway.config import ConfigError, load_config


def settings(**env: str) -> SeparationSettings:
    section: SeparationSettings = load_config({}, env, need_secret=False).sections["music_source_separate"]
    return section


def test_defaults() -> None:
    assert (settings().max_loaded_models, settings().stem_cache_bytes) == (3, 2 * 1024 ** 3)


def test_values() -> None:
    chosen = settings(SAMI_MAX_LOADED_MODELS="1", SAMI_STEM_CACHE_BYTES="0")
    assert (chosen.max_loaded_models, chosen.stem_cache_bytes) == (1, 0)


@pytest.mark.parametrize(("variable", "value"), [("SAMI_MAX_LOADED_MODELS", "0"), ("SAMI_MAX_LOADED_MODELS", "65"),
                                                 ("SAMI_MAX_LOADED_MODELS", "two"), ("SAMI_STEM_CACHE_BYTES", "-1"),
                                                 ("SAMI_STEM_CACHE_BYTES", "2GiB")])
def test_refusals_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(**{variable: value})
