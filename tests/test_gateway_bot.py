"""`ledger bot` and the bot's set-up: settings from the environment, intents, command sync,
draining shutdown, and clear exits for a missing or rejected token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import discord
import pytest

from gateway.bot import BotConfigError, BotSettings, LedgerBot, bot_intents
from gateway.cli import main
from gateway.interactions import LedgerTree, ShuttingDown
from tests.fix_discord import FakeInteraction, FakeUser, GatewayEnv


def test_settings_come_from_the_environment_and_hide_the_token() -> None:
    settings = BotSettings.from_env({"DISCORD_TOKEN": " secret ", "DISCORD_GUILD_ID": "42"})
    assert settings.token == "secret" and settings.dev_guild_id == 42
    assert "secret" not in repr(settings)
    with pytest.raises(BotConfigError, match="DISCORD_TOKEN is not set"):
        BotSettings.from_env({})
    with pytest.raises(BotConfigError, match="DISCORD_GUILD_ID"):
        BotSettings.from_env({"DISCORD_TOKEN": "t", "DISCORD_GUILD_ID": "general"})


def test_intents_are_what_the_listeners_need_and_no_more() -> None:
    intents = bot_intents()
    assert intents.guilds and intents.members and intents.guild_messages
    assert intents.voice_states and intents.guild_reactions and intents.invites
    assert not intents.message_content and not intents.dm_messages and not intents.presences


@pytest.mark.parametrize("dev_guild", [None, 777])
def test_setup_hook_adds_commands_and_syncs(gateway: GatewayEnv, dev_guild: int | None) -> None:
    bot = LedgerBot(gateway.services, BotSettings(token="t", dev_guild_id=dev_guild))
    synced: list[Any] = []

    async def fake_sync(*, guild: discord.abc.Snowflake | None = None) -> list[Any]:
        synced.append(guild.id if guild else "global")
        return []

    bot.tree.sync = fake_sync  # type: ignore[method-assign]
    gateway.run(bot.setup_hook())
    assert synced == [dev_guild or "global"]
    assert set(bot.cogs) >= {
        "MemberCommands",
        "ModerationCommands",
        "EconomyCommands",
        "ConfigCommands",
        "ListenersCog",
    }
    assert bot.scheduler is not None and bot.scheduler.running
    assert {job.id for job in bot.scheduler.get_jobs()} == {"voice_ticks", "expire_warnings"}
    outbox = bot._outbox
    assert outbox is not None and not outbox.done()
    assert isinstance(bot.tree.translator, discord.app_commands.Translator)
    if dev_guild:  # global commands were copied to the development guild
        assert {c.name for c in bot.tree.get_commands(guild=discord.Object(dev_guild))} >= {"pay"}
    gateway.run(bot.close())
    assert not bot.scheduler.running and outbox.done() and outbox.exception() is None


def test_close_lets_running_commands_finish_and_refuses_new_ones(gateway: GatewayEnv) -> None:
    bot = LedgerBot(gateway.services, BotSettings(token="t", sync_commands=False))
    tree = bot.tree
    assert isinstance(tree, LedgerTree)
    in_flight = tree.in_flight
    entered, draining = asyncio.Event(), asyncio.Event()
    finished: list[str] = []
    drain = in_flight.drain

    async def observed_drain(within: float) -> int:
        draining.set()
        return await drain(within)

    in_flight.drain = observed_drain  # type: ignore[method-assign]

    async def running_command() -> None:
        await tree.interaction_check(FakeInteraction(FakeUser(1)))  # type: ignore[arg-type]
        entered.set()
        await draining.wait()  # still running when shutdown begins
        finished.append("replied")

    async def scenario() -> None:
        command = asyncio.create_task(running_command())
        await entered.wait()
        await bot.close()
        assert finished == ["replied"] and command.done()
        late = FakeInteraction(FakeUser(2))
        with pytest.raises(ShuttingDown):
            await tree.interaction_check(late)  # type: ignore[arg-type]

    gateway.run(scenario())


def test_bot_without_a_token_exits_2_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert main(["bot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: DISCORD_TOKEN is not set") and err.count("\n") == 1
    assert "Traceback" not in err


def test_bot_with_a_rejected_token_exits_1(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    tmp_path: Path,
) -> None:
    async def rejected(self: LedgerBot, token: str, *, reconnect: bool = True) -> None:
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setenv("DISCORD_TOKEN", "not-a-token")
    monkeypatch.delenv("DISCORD_GUILD_ID", raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(LedgerBot, "start", rejected)
    assert main(["bot", "--no-sync"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Discord rejected DISCORD_TOKEN") and "Traceback" not in err
