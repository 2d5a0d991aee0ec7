"""Isolation and permissions: no command moves value across guilds; moderator and admin commands
refuse members without the permission, at the ledger and in the gateway's callbacks (as a client
that skipped Discord's default-permission filter would call them); the per-member rate limit
follows the guild's own config."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.interactions import LedgerTree
from gateway.rate_limit import CommandRateLimit
from ledger import commands as cmd
from ledger.consistency import check_guild
from ledger.errors import InvalidInput, LedgerError, NotPermitted
from tests.fix_db import LedgerEnv
from tests.fix_discord import (
    ADMIN,
    GUILD,
    MEMBER,
    MODERATOR,
    FakeChannel,
    FakeInteraction,
    FakeRole,
    FakeUser,
    GatewayEnv,
)

A, B = 4141, 4242
ADMIN_ACTOR = cmd.Actor(900, is_moderator=True, is_admin=True)
MOD_ACTOR = cmd.Actor(901, is_moderator=True)
NOBODY = cmd.Actor(902)


def snapshot(env: LedgerEnv, guild: int) -> tuple[list[Any], list[Any]]:
    """A guild's whole log and state rows."""
    return (
        env.sql("SELECT position, type, data::text FROM events WHERE guild_id = %s", (guild,)),
        env.sql("SELECT stream, version, state::text FROM streams WHERE guild_id = %s", (guild,)),
    )


def attempt(env: LedgerEnv, command: cmd.AnyCommand) -> str:
    """Execute; the refusal's class name, or "ok"."""
    try:
        env.run(env.ledger.execute(command))
    except LedgerError as refused:
        return type(refused).__name__
    return "ok"


def test_no_command_moves_value_across_guilds(env: LedgerEnv) -> None:
    for member in (1, 2):  # rich in guild B
        env.run(
            env.ledger.execute(
                cmd.AdminGrant(
                    guild_id=B,
                    command_id=f"b{member}",
                    member_id=member,
                    actor=ADMIN_ACTOR,
                    lc=10_000,
                )
            )
        )
    b_positions = [p for (p, *_) in snapshot(env, B)[0]]
    before = snapshot(env, B)
    # in guild A, the same member ids are new members with A's starting balance only
    results = {
        "transfer B's wealth": attempt(
            env, cmd.Transfer(guild_id=A, command_id="a1", from_id=1, to_id=2, amount=5_000)
        ),
        "small transfer in A": attempt(
            env, cmd.Transfer(guild_id=A, command_id="a2", from_id=1, to_id=3, amount=10)
        ),
        "take B's LC in A": attempt(
            env,
            cmd.AdminTake(guild_id=A, command_id="a3", member_id=2, actor=ADMIN_ACTOR, lc=5_000),
        ),
        "revert B's events from A": attempt(
            env,
            cmd.Revert(
                guild_id=A, command_id="a4", actor=ADMIN_ACTOR, positions=tuple(b_positions)
            ),
        ),
    }
    assert results == {
        "transfer B's wealth": "InsufficientFunds",
        "small transfer in A": "ok",  # within A, from A's own starting balance
        "take B's LC in A": "UnknownMember",  # member 2 never joined guild A
        "revert B's events from A": "InvalidInput",
    }
    assert snapshot(env, B) == before, "a command in guild A changed guild B"
    for guild in (A, B):
        report = env.run(check_guild(env.store.pool, guild))
        assert report.ok, report.problems
    a_balances = env.run(env.store.load(A, [], [1, 2, 3]))
    assert sum(s.balance for s in a_balances.states.values()) <= 3 * 25  # nothing came from B


def test_a_revert_never_reaches_another_guilds_positions(env: LedgerEnv) -> None:
    mine = env.run(
        env.ledger.execute(
            cmd.AdminGrant(guild_id=A, command_id="a", member_id=1, actor=ADMIN_ACTOR, lc=50)
        )
    ).positions
    theirs = env.run(
        env.ledger.execute(
            cmd.AdminGrant(guild_id=B, command_id="b", member_id=1, actor=ADMIN_ACTOR, lc=50)
        )
    ).positions
    before = (snapshot(env, A), snapshot(env, B))
    for positions in (theirs, [*mine, *theirs]):
        revert = cmd.Revert(
            guild_id=A,
            command_id=f"r{len(positions)}",
            actor=ADMIN_ACTOR,
            positions=tuple(positions),
        )
        with pytest.raises(InvalidInput, match="No event at position"):
            env.run(env.ledger.preview(revert))
        with pytest.raises(InvalidInput, match="No event at position"):
            env.run(env.ledger.execute(revert))
    assert (snapshot(env, A), snapshot(env, B)) == before


def privileged(actor: cmd.Actor) -> list[cmd.AnyCommand]:
    """One of each command that needs a moderator or an admin, issued by `actor`."""
    g = {"guild_id": A, "actor": actor}
    return [
        cmd.AdminGrant(**g, command_id="p1", member_id=5, lc=10),
        cmd.AdminTake(**g, command_id="p2", member_id=5, lc=1),
        cmd.GrantItem(**g, command_id="p3", member_id=5, item="jackpot", quantity=1),
        cmd.ChangeConfig(**g, command_id="p4", key="daily_amount", value=1_000, op="set"),
        cmd.ImportXp(**g, command_id="p5", member_id=5, xp=10_000, source_ref="mee6"),
        cmd.Revert(**g, command_id="p6", positions=(1,)),
        cmd.IssueWarning(**g, command_id="p7", member_id=5, reason="spam"),
        cmd.PardonWarning(**g, command_id="p8", member_id=5, warning_id="1", reason="ok"),
    ]


def test_privileged_commands_refuse_an_actor_without_the_permission(env: LedgerEnv) -> None:
    env.run(env.ledger.execute(cmd.Join(guild_id=A, command_id="join", member_id=5)))
    before = snapshot(env, A)
    refused = {type(c).__name__: attempt(env, c) for c in privileged(NOBODY)}
    assert set(refused.values()) == {"NotPermitted"}, refused
    moderator = {type(c).__name__: attempt(env, c) for c in privileged(MOD_ACTOR)[:6]}
    assert set(moderator.values()) == {"NotPermitted"}, moderator  # admin-only ones
    assert snapshot(env, A) == before


SPAMMER = FakeUser(777, "Spammer")


def gateway_calls(gw: GatewayEnv) -> dict[str, tuple[Any, dict[str, Any], bool]]:
    """Every moderator/admin callback with plausible options, and whether admins only."""
    return {
        "warn": (gw.moderation.warn, {"member": SPAMMER, "reason": "spam"}, False),
        "warnings": (gw.moderation.warnings, {"member": SPAMMER}, False),
        "pardon": (gw.moderation.pardon, {"member": SPAMMER, "warning": "1"}, False),
        "economy grant": (gw.economy.grant, {"member": SPAMMER, "lc": 500}, True),
        "economy take": (gw.economy.take, {"member": SPAMMER, "lc": 5}, True),
        "economy item": (gw.economy.item, {"member": SPAMMER, "item": "jackpot"}, True),
        "economy revert": (gw.economy.revert, {"positions": "1"}, True),
        "config show": (gw.config.show, {}, True),
        "config set": (gw.config.set, {"setting": "daily_amount", "value": 5_000}, True),
        "config no-xp-channel": (gw.config.no_xp_channel, {"channel": FakeChannel(5)}, True),
        "config no-xp-role": (gw.config.no_xp_role, {"role": FakeRole(6)}, True),
        "config role-multiplier": (
            gw.config.role_multiplier,
            {"role": FakeRole(6), "percent": 500},
            True,
        ),
        "config channel-multiplier": (
            gw.config.channel_multiplier,
            {"channel": FakeChannel(5), "percent": 500},
            True,
        ),
        "config level-role": (gw.config.level_role, {"level": 5, "role": FakeRole(7)}, True),
        "config level-roles-mode": (gw.config.level_roles_mode, {"mode": "replace"}, True),
        "config announcements": (gw.config.announcements, {"channel": None}, True),
        "config card-colours": (gw.config.card_colours, {"accent": "ff0000"}, True),
    }


def test_gateway_refuses_members_without_the_permission(gateway: GatewayEnv) -> None:
    events = gateway.sql("SELECT count(*) FROM events")
    refusals: dict[str, str] = {}
    for name, (callback, options, admin_only) in gateway_calls(gateway).items():
        for permissions in (MEMBER, MODERATOR) if admin_only else (MEMBER,):
            interaction = FakeInteraction(FakeUser(555), permissions=permissions)
            error = gateway.call_like_tree(callback, interaction, **options)
            refusals[f"{name} by {permissions.value}"] = type(error).__name__
            assert interaction.last.ephemeral, name
    assert set(refusals.values()) == {NotPermitted.__name__}, refusals
    assert gateway.sql("SELECT count(*) FROM events") == events  # nothing appended


def test_gateway_revert_of_another_guilds_positions_is_refused(gateway: GatewayEnv) -> None:
    other = gateway.run(
        gateway.services.ledger.execute(
            cmd.AdminGrant(
                guild_id=GUILD + 1, command_id="elsewhere", member_id=1, actor=ADMIN_ACTOR, lc=9
            )
        )
    )
    before = gateway.sql("SELECT count(*) FROM events")
    interaction = FakeInteraction(FakeUser(301), permissions=ADMIN)
    error = gateway.call_like_tree(
        gateway.economy.revert, interaction, positions=",".join(map(str, other.positions))
    )
    assert isinstance(error, InvalidInput) and interaction.last.ephemeral
    assert "No event at position" in (interaction.last.content or "")
    assert gateway.sql("SELECT count(*) FROM events") == before


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_is_the_guilds_configured_one(gateway: GatewayEnv) -> None:
    gateway.run(
        gateway.services.ledger.execute(
            cmd.ChangeConfig(
                guild_id=GUILD,
                command_id="rate",
                actor=ADMIN_ACTOR,
                key="command_rate_per_minute",
                value=2,
                op="set",
            )
        )
    )
    clock = Clock()
    tree = LedgerTree.__new__(LedgerTree)  # no Discord client: only the check is exercised
    tree.in_flight = type("InFlight", (), {"closing": False, "enter": lambda self: None})()
    tree.rate_limit = CommandRateLimit(gateway.deps.guild_config, clock=clock)

    def allowed(user: int, guild: int = GUILD) -> bool:
        interaction = FakeInteraction(FakeUser(user), guild_id=guild)
        ok = bool(gateway.run(tree.interaction_check(interaction)))
        if not ok:
            assert interaction.last.ephemeral and "try again in" in (interaction.last.content or "")
        return ok

    assert [allowed(1) for _ in range(3)] == [True, True, False]  # this guild: 2 a minute
    assert allowed(2)  # per member
    assert all(allowed(1, GUILD + 1) for _ in range(20))  # another guild: the default 20
    assert not allowed(1, GUILD + 1)
    clock.now += 60.5
    assert allowed(1)
    gateway.run(
        gateway.services.ledger.execute(
            cmd.ChangeConfig(
                guild_id=GUILD,
                command_id="no-limit",
                actor=ADMIN_ACTOR,
                key="command_rate_per_minute",
                value=0,
                op="set",
            )
        )
    )
    clock.now += 31  # the cached limit expires
    assert all(allowed(1) for _ in range(50))  # 0: no limit
