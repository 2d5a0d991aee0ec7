"""Members' slash commands: the command tree as Discord receives it, and callbacks run with fake
interactions over a real ledger (effects checked in the log, replies from the command's result)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from typing import Any

import discord
import pytest
from discord import app_commands
from PIL import Image

from gateway.bot import BotSettings, LedgerBot, command_cogs
from gateway.interactions import CommandDeps, handle_error
from gateway.locale import FrenchTranslator
from gateway.member_commands import MAX_LC_OPTION
from gateway.rank_card import CARD_SIZE
from gateway.views import ConfirmView, InventoryView, PagedView
from ledger import commands as cmd
from ledger.errors import CooldownActive, InsufficientFunds, LedgerError
from tests.fix_discord import GUILD, FakeInteraction, FakeUser, GatewayEnv
from tests.fix_projections import project

ADMIN_ACTOR = cmd.Actor(1, is_moderator=True, is_admin=True)
MEMBER_COMMANDS = {
    "level",
    "rank",
    "balance",
    "pay",
    "daily",
    "inventory",
    "leaderboard",
    "history",
}
NAME = re.compile(r"^[-_\w]{1,32}$")


# --- the command tree ------------------------------------------------------------------------


@pytest.fixture
def tree(aio: asyncio.Runner) -> Iterator[app_commands.CommandTree[Any]]:
    """The tree `setup_hook` builds (no connection: services are never touched)."""
    bot = LedgerBot(None, BotSettings(token="unused", sync_commands=False))  # type: ignore[arg-type]

    async def build() -> None:
        for cog in command_cogs(CommandDeps(None)):  # type: ignore[arg-type]
            await bot.add_cog(cog)

    aio.run(build())
    yield bot.tree


def test_tree_names_groups_and_options(tree: app_commands.CommandTree[Any]) -> None:
    top = {c.name: c for c in tree.get_commands()}
    assert set(top) == MEMBER_COMMANDS | {"warn", "warnings", "pardon", "economy", "config"}
    economy, config = top["economy"], top["config"]
    assert isinstance(economy, app_commands.Group) and isinstance(config, app_commands.Group)
    assert {c.name for c in economy.commands} == {"grant", "take", "item", "revert"}
    assert {
        "show",
        "set",
        "no-xp-channel",
        "no-xp-role",
        "role-multiplier",
        "level-role",
        "level-roles-mode",
        "announcements",
        "card-colours",
    } <= {c.name for c in config.commands}

    pay = top["pay"]
    assert isinstance(pay, app_commands.Command)
    amount = pay.get_parameter("amount")
    assert amount is not None and amount.required
    assert amount.type is discord.AppCommandOptionType.integer
    assert (amount.min_value, amount.max_value) == (1, MAX_LC_OPTION)
    warn = top["warn"]
    assert isinstance(warn, app_commands.Command)
    reason = warn.get_parameter("reason")
    assert reason is not None and (reason.min_value, reason.max_value) == (1, 500)
    level_role = config.get_command("level-role")
    assert isinstance(level_role, app_commands.Command)
    level = level_role.get_parameter("level")
    assert level is not None and (level.min_value, level.max_value) == (1, 1000)
    board = top["leaderboard"]
    assert isinstance(board, app_commands.Command)
    assert [c.value for c in board.get_parameter("board").choices] == ["xp", "lc"]  # type: ignore[union-attr]
    assert [c.value for c in board.get_parameter("period").choices] == [  # type: ignore[union-attr]
        "all",
        "day",
        "week",
        "month",
    ]


def test_default_permissions_and_guild_only(tree: app_commands.CommandTree[Any]) -> None:
    moderators = discord.Permissions(moderate_members=True)
    admins = discord.Permissions(manage_guild=True)
    for command in tree.get_commands():
        assert command.guild_only, command.name
        expected = {
            "warn": moderators,
            "warnings": moderators,
            "pardon": moderators,
            "economy": admins,
            "config": admins,
        }.get(command.name)
        assert command.default_permissions == expected, command.name


def test_every_name_description_and_choice_has_french(
    tree: app_commands.CommandTree[Any], aio: asyncio.Runner
) -> None:
    translator = FrenchTranslator()

    async def payloads() -> list[dict[str, Any]]:
        return [await c.get_translated_payload(tree, translator) for c in tree.get_commands()]

    def check(node: dict[str, Any], siblings: set[str]) -> None:
        french = node["name_localizations"].get("fr")
        assert french and NAME.match(french) and french == french.lower(), node["name"]
        assert french not in siblings, f"two options named {french!r}"
        siblings.add(french)
        described = node["description_localizations"].get("fr")
        assert described and len(described) <= 100, node["name"]
        for choice in node.get("choices", []):
            assert choice["name_localizations"].get("fr"), choice["name"]
        names: set[str] = set()
        for option in node.get("options", []):
            check(option, names)

    top: set[str] = set()
    for payload in aio.run(payloads()):
        check(payload, top)
    assert {"niveau", "sac", "lc"} <= top  # the names French-speaking seed guilds use


# --- callbacks --------------------------------------------------------------------------------


def grant(gw: GatewayEnv, member: int, lc: int = 0, xp: int = 0, tag: str = "") -> None:
    gw.run(
        gw.env.ledger.execute(
            cmd.AdminGrant(
                guild_id=GUILD,
                command_id=f"seed-{member}-{lc}-{xp}-{tag}",
                member_id=member,
                actor=ADMIN_ACTOR,
                lc=lc,
                xp=xp,
            )
        )
    )


def test_daily_replies_from_its_outcome_and_a_retry_is_idempotent(gateway: GatewayEnv) -> None:
    me = FakeUser(101)
    first = gateway.call(gateway.member.daily, FakeInteraction(me))
    assert gateway.events(first.id) == ["member_joined", "daily_claimed"]
    assert "**50 LC**" in (first.last.content or "") and "**75 LC**" in (first.last.content or "")
    assert not first.last.ephemeral
    # no projector ran: the figures came from the command's result, not a read table
    assert gateway.sql("SELECT count(*) FROM balances") == [(0,)]

    retry = gateway.call(gateway.member.daily, FakeInteraction(me, id=first.id))
    assert retry.last.content == first.last.content
    assert gateway.sql("SELECT count(*) FROM events WHERE type = 'daily_claimed'") == [(1,)]

    again = FakeInteraction(me)
    error = gateway.call_like_tree(gateway.member.daily, again)
    assert isinstance(error, CooldownActive)
    assert again.last.ephemeral and "Come back in" in (again.last.content or "")


def test_pay_moves_lc_and_refuses_what_the_wallet_cannot_cover(gateway: GatewayEnv) -> None:
    payer, payee = FakeUser(101), FakeUser(102)
    paid = gateway.call(gateway.member.pay, FakeInteraction(payer), member=payee, amount=10)
    assert gateway.events(paid.id) == [
        "member_joined",
        "member_joined",
        "transfer_sent",
        "transfer_received",
    ]
    assert "<@101> sent **10 LC** to <@102>" in (paid.last.content or "")
    assert "Balance: 15 LC" in (paid.last.content or "")

    short = FakeInteraction(payer)
    error = gateway.call_like_tree(gateway.member.pay, short, member=payee, amount=50)
    assert isinstance(error, InsufficientFunds)
    assert short.last.ephemeral
    assert short.last.content == "You have 15 LC; you cannot send 50 LC."
    assert gateway.events(short.id) == []


def test_pay_above_the_threshold_waits_for_confirmation(gateway: GatewayEnv) -> None:
    payer, payee = FakeUser(101), FakeUser(102)
    grant(gateway, 101, lc=5000)
    asked = gateway.call(gateway.member.pay, FakeInteraction(payer), member=payee, amount=2000)
    question = asked.last
    assert question.ephemeral and isinstance(question.view, ConfirmView)
    assert "2,000 LC" in (question.content or "")
    assert gateway.events(asked.id) == []  # nothing until confirmed

    view = question.view
    stranger = FakeInteraction(FakeUser(103))
    assert gateway.run(view.interaction_check(stranger)) is False  # type: ignore[arg-type]
    assert stranger.last.ephemeral

    press = FakeInteraction(payer)
    gateway.run(view.confirm.callback(press))  # type: ignore[attr-defined]
    assert gateway.events(asked.id) == ["member_joined", "transfer_sent", "transfer_received"]
    assert press.sent[0].how == "edit" and "Balance: 3,025 LC" in (press.sent[0].content or "")
    assert press.sent[1].how == "followup" and not press.sent[1].ephemeral
    assert all(item.disabled for item in view.children)  # type: ignore[attr-defined]

    cancelled = gateway.call(gateway.member.pay, FakeInteraction(payer), member=payee, amount=1500)
    gateway.run(cancelled.last.view.cancel.callback(FakeInteraction(payer)))  # type: ignore[union-attr]
    assert gateway.events(cancelled.id) == []


def test_level_and_balance_for_a_first_time_member_come_from_the_join(gateway: GatewayEnv) -> None:
    newcomer = FakeUser(104, display_name="Newcomer")
    shown = gateway.call(gateway.member.level, FakeInteraction(newcomer))
    assert gateway.events(shown.id) == ["member_joined"]
    assert "25 LC" in shown.last.text() and "unranked" in shown.last.text()
    balance = gateway.call(gateway.member.balance, FakeInteraction(newcomer))
    assert gateway.events(balance.id) == []  # already joined: nothing appended
    # the wallet is read from the projection, which has not caught up yet ...
    assert "**0 LC**" in (balance.last.content or "")
    project(gateway.env)
    balance = gateway.call(gateway.member.balance, FakeInteraction(newcomer))
    assert "**25 LC**" in (balance.last.content or "")


def test_level_shows_progress_and_rank_from_the_read_tables(gateway: GatewayEnv) -> None:
    grant(gateway, 201, xp=500)
    grant(gateway, 202, xp=100)
    project(gateway.env)
    shown = gateway.call(
        gateway.member.level, FakeInteraction(FakeUser(101)), member=FakeUser(202, "Second")
    )
    text = shown.last.text()
    assert shown.last.embed is not None and shown.last.embed.title == "Second"
    assert "#2 of 2" in text and "Level 1" in text and "0 / 155 XP" in text
    bot = FakeInteraction(FakeUser(101))
    assert isinstance(
        gateway.call_like_tree(gateway.member.level, bot, member=FakeUser(9, bot=True)), LedgerError
    )


def test_rank_card_is_a_png_attachment(gateway: GatewayEnv) -> None:
    grant(gateway, 101, xp=300)
    project(gateway.env)
    shown = gateway.call(gateway.member.rank, FakeInteraction(FakeUser(101, "Carder")))
    attachment = shown.last.file
    assert attachment is not None and attachment.filename == "rank.png"
    image = Image.open(io.BytesIO(attachment.fp.read()))
    assert image.format == "PNG" and image.size == CARD_SIZE


def test_leaderboard_pages_with_buttons(gateway: GatewayEnv) -> None:
    for member in range(1, 13):
        grant(gateway, 300 + member, xp=member * 10)
    project(gateway.env)
    me = FakeUser(101)
    shown = gateway.call(gateway.member.leaderboard, FakeInteraction(me), board="xp", period="all")
    first = shown.last
    assert isinstance(first.view, PagedView)
    lines = (first.embed.description or "").splitlines()  # type: ignore[union-attr]
    assert len(lines) == 10 and lines[0].startswith("**#1** <@312> · 120 XP")
    view = first.view
    assert view.previous.disabled and not view.next.disabled  # type: ignore[attr-defined]
    press = FakeInteraction(me)
    gateway.run(view.next.callback(press))  # type: ignore[attr-defined]
    second = (press.last.embed.description or "").splitlines()  # type: ignore[union-attr]
    assert second == ["**#11** <@302> · 20 XP", "**#12** <@301> · 10 XP"]
    assert view.next.disabled and not view.previous.disabled  # type: ignore[attr-defined]
    back = FakeInteraction(me)
    gateway.run(view.previous.callback(back))  # type: ignore[attr-defined]
    assert (back.last.embed.description or "").splitlines() == lines  # type: ignore[union-attr]


def test_inventory_buttons_use_items(gateway: GatewayEnv) -> None:
    gateway.run(
        gateway.env.ledger.execute(
            cmd.GrantItem(
                guild_id=GUILD,
                command_id="items",
                member_id=101,
                item="jackpot",
                quantity=2,
                actor=ADMIN_ACTOR,
            )
        )
    )
    project(gateway.env)
    me = FakeUser(101)
    shown = gateway.call(gateway.member.inventory, FakeInteraction(me))
    view = shown.last.view
    assert shown.last.ephemeral and isinstance(view, InventoryView)
    button = view.buttons["jackpot"]
    assert button.label == "Open jackpot (2)"
    press = FakeInteraction(me)
    gateway.run(button.callback(press))
    assert gateway.events(press.id) == ["jackpot_opened"]
    won = gateway.sql("SELECT (data->>'amount')::int FROM events WHERE type = 'jackpot_opened'")[0][
        0
    ]
    assert f"won **{won} LC**" in (press.last.content or "")
    assert f"**{25 + won} LC**" in (press.last.content or "")
    assert button.label == "Open jackpot (1)" and not button.disabled


def test_history_is_private_and_lists_positions(gateway: GatewayEnv) -> None:
    me = FakeUser(101)
    daily = gateway.call(gateway.member.daily, FakeInteraction(me))
    shown = gateway.call(gateway.member.history, FakeInteraction(me))
    assert shown.last.ephemeral
    text = shown.last.text()
    position = gateway.sql(
        "SELECT position FROM events WHERE meta->>'command_id' = %s AND type = 'daily_claimed'",
        (str(daily.id),),
    )[0][0]
    assert f"`#{position}`" in text and "daily gift 50 LC" in text and "+50 LC" in text


def test_unexpected_errors_get_a_generic_ephemeral_reply(
    gateway: GatewayEnv, caplog: pytest.LogCaptureFixture
) -> None:
    broken = FakeInteraction(FakeUser(101))
    failure = app_commands.CommandInvokeError(gateway.member.daily, RuntimeError("boom"))  # type: ignore[arg-type]
    gateway.run(handle_error(broken, failure))  # type: ignore[arg-type]
    assert broken.last.ephemeral and "Something went wrong" in (broken.last.content or "")
    assert "boom" not in (broken.last.content or "")
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
