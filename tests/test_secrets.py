"""Secrets never reach the output: a database password in an error, a bot token in a repr."""

from __future__ import annotations

import logging

import pytest

from gateway.bot import BotSettings
from gateway.cli import main

SECRET = "s3cr3t-Pa55w0rd"


def test_an_unreachable_database_error_does_not_print_the_password(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://ledger:{SECRET}@127.0.0.1:9/ledger")
    with caplog.at_level(logging.DEBUG):
        code = main(["migrate"])
    out = capsys.readouterr()
    assert code == 3 and "cannot reach PostgreSQL" in out.err
    assert SECRET not in out.err + out.out + caplog.text


def test_the_bot_token_is_not_in_its_settings_repr() -> None:
    settings = BotSettings.from_env({"DISCORD_TOKEN": SECRET})
    assert SECRET not in repr(settings) and SECRET not in str(settings)
