"""The `sami-gateway` command line: its commands and flags, `token`, and how bad input exits (no server started)."""

from __future__ import annotations

import argparse
import os

import pytest

from sami_gateway.auth.authenticator import TokenService
from sami_gateway.cli.main import build_parser, main
from sami_gateway.config import MAX_TOKEN_TTL, SETTINGS
from sami_gateway.errors import GatewayError

SECRET = "cli-test-secret-0123456789abcdef0123"


@pytest.fixture(autouse=True)
def environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SAMI_* variable from the machine running the tests; a token secret."""
    for name in list(os.environ):
        if name.startswith("SAMI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SAMI_TOKEN_SECRET", SECRET)


def commands(parser: argparse.ArgumentParser) -> set[str]:
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return set(subparsers.choices)


def test_the_parser_has_the_core_and_the_plugin_commands() -> None:
    assert {"serve", "token", "models", "separate"} <= commands(build_parser())


@pytest.mark.parametrize("command", [["serve"], ["token", "--appkey", "k"]])
def test_every_setting_is_a_flag(command: list[str]) -> None:
    flags = [arg for setting in SETTINGS for arg in ("--" + setting.name.replace("_", "-"), "1")]
    args = vars(build_parser().parse_args([*command, *flags, "--config", "gateway.toml"]))
    assert args["command"] == command[0] and args["config"] == "gateway.toml"
    assert all(args[setting.name] == "1" for setting in SETTINGS)


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2 and "required" in capsys.readouterr().err


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_token_prints_a_token_that_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--appkey", "k", "--ttl", "60"]) == 0
    token = last_line(capsys)
    claims = TokenService(SECRET).verify(token, "k")
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(GatewayError):
        TokenService(SECRET).verify(token, "other")  # bound to its appkey


def test_token_ttl_defaults_to_sami_token_ttl(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAMI_TOKEN_TTL", "120")
    assert main(["token", "--appkey", "k"]) == 0
    claims = TokenService(SECRET).verify(last_line(capsys), "k")
    assert claims["exp"] - claims["iat"] == 120


def test_token_is_signed_with_the_flags_key(capsys: pytest.CaptureFixture[str]) -> None:
    other = "another-secret-0123456789abcdef01234"
    assert main(["token", "--appkey", "k", "--token-secret", other, "--token-kid", "k2"]) == 0
    token = last_line(capsys)
    assert TokenService(other, "k2").verify(token, "k")["sub"] == "k"
    with pytest.raises(GatewayError):
        TokenService(SECRET, "k2").verify(token, "k")


def test_token_for_an_unknown_appkey_warns(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAMI_APPKEYS", "known")
    assert main(["token", "--appkey", "stranger"]) == 0
    captured = capsys.readouterr()
    assert "warning: stranger is not in SAMI_APPKEYS" in captured.err
    assert TokenService(SECRET).verify(captured.out.strip().splitlines()[-1], "stranger")
    assert main(["token", "--appkey", "known"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("ttl", ["0", "-5", str(MAX_TOKEN_TTL + 1)])
def test_a_ttl_out_of_range_exits_2(ttl: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--appkey", "k", "--ttl", ttl]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"sami-gateway: --ttl: ttl must be 1..{MAX_TOKEN_TTL} seconds"


def test_a_ttl_that_is_not_a_number_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "--appkey", "k", "--ttl", "soon"])
    assert info.value.code == 2 and "--ttl: invalid int value: 'soon'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["token", "--appkey", "k"], ["serve"]])
def test_a_config_error_exits_2_naming_the_variable(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SAMI_PORT", "eighty")
    assert main(command) == 2  # before any server is built
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sami-gateway: SAMI_PORT (env): invalid value 'eighty'")


def test_a_bad_flag_value_names_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--appkey", "k", "--port", "70000"]) == 2
    assert capsys.readouterr().err.strip() == "sami-gateway: SAMI_PORT (flag): invalid value '70000': must be 0..65535"


def test_a_missing_secret_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SAMI_TOKEN_SECRET")
    assert main(["token", "--appkey", "k"]) == 2
    assert "SAMI_TOKEN_SECRET must be set" in capsys.readouterr().err
