"""GetToken credentials: parse_access_keys from SAMI_ACCESS_KEYS text and from a TOML table."""

from __future__ import annotations

from typing import Any

import pytest

from sami_gateway.config.access_keys import MIN_SECRET_KEY_LENGTH, AccessKey, parse_access_keys

AK, SK = "AKLTgatewayTestKey", "gatewayTestSecretKey/with+chars=="
OTHER_AK = "AKLTotherKey"


def test_parse_access_keys_from_text_and_table() -> None:
    from_text = parse_access_keys(f" {AK}:{SK}:app-a|app-b , {OTHER_AK}:sk:with:colons:0123456:app-c,")
    assert from_text == {AK: AccessKey(AK, SK, frozenset({"app-a", "app-b"})),
                         OTHER_AK: AccessKey(OTHER_AK, "sk:with:colons:0123456", frozenset({"app-c"}))}
    from_table = parse_access_keys({AK: {"secret_key": SK, "appkeys": ["app-a", "app-b"]}})
    assert from_table == {AK: from_text[AK]}
    assert SK not in repr(from_text) and parse_access_keys("") == {}


@pytest.mark.parametrize("value", [
    f"{AK}:{SK}",  # no appkeys
    f"{AK}:{SK}:",
    f"{AK}:{SK}:app-a||app-b",
    f"{AK}::app-a",
    f":{SK}:app-a",
    f"{AK}:short-secret:app-a",
    f"AK/LT:{SK}:app-a",
    f"{AK}:{SK}:app-a,{AK}:{SK}:app-b",
    {AK: {"secret_key": SK}},
    {AK: {"secret_key": SK, "appkeys": "app-a"}},
    {AK: {"secret_key": SK, "appkeys": ["app-a"], "extra": 1}},
    {AK: {"secret_key": 5, "appkeys": ["app-a"]}},
    {AK: "app-a"},
    ["not", "a", "table"],
])
def test_parse_access_keys_refuses_bad_entries(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        parse_access_keys(value)
    assert SK not in str(caught.value) and "short-secret" not in str(caught.value)


def test_secret_key_length_bound_is_inclusive() -> None:
    secret = "s" * MIN_SECRET_KEY_LENGTH
    assert parse_access_keys(f"{AK}:{secret}:app-a")[AK].secret_key == secret
    with pytest.raises(ValueError, match=AK):
        parse_access_keys(f"{AK}:{secret[:-1]}:app-a")


@pytest.mark.parametrize("access_key", ["AK LT", "AK\tLT", "AK,LT"])
def test_access_key_with_a_separator_is_refused_in_a_table(access_key: str) -> None:
    with pytest.raises(ValueError, match="empty or contains"):
        parse_access_keys({access_key: {"secret_key": SK, "appkeys": ["app-a"]}})


@pytest.mark.parametrize(("value", "message"), [
    (f"{AK}:{SK}:a,{AK}:{SK}:b", f"access key '{AK}' is given twice"),
    ({AK: {"secret_key": SK, "appkeys": []}}, f"access key '{AK}': the appkey list is empty"),
    (f"{AK}:{SK}", "access key entry 1 must be AK:SK:appkey1|appkey2"),
])
def test_errors_name_the_access_key(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_access_keys(value)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("value", [f"{AK}={SK}=app-a", f"{AK} {SK}:app-a"])
def test_a_misseparated_entry_does_not_echo_its_secret_key(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_access_keys(value)
    assert SK not in str(caught.value)
