"""The outbox: effects planned from the log once, delivered once across restarts, retried on
failure, and never fired again by a rebuild."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import handlers
from gateway.handlers import MessageSeen
from gateway.outbox import OutboxConsumer, OutboxDispatcher, outbox_status
from gateway.side_effects import LevelAnnouncement, LevelRoles, WarningAction
from ledger import commands as cmd
from projections import rebuild
from tests.fix_db import LedgerEnv
from tests.fix_gateway_fakes import FakeSender, Killed, running_services

G, G2 = 5151, 5252
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)
ADMIN = cmd.Actor(1, is_moderator=True, is_admin=True)
LEVEL_2_XP = 300  # level 1 from 100 XP, level 2 from 255, level 3 from 475


def configure(env: LedgerEnv, guild: int, **settings: Any) -> None:
    for key, value in settings.items():
        env.run(
            env.ledger.execute(
                cmd.ChangeConfig(
                    guild_id=guild,
                    command_id=f"config-{key}",
                    actor=ADMIN,
                    key=key,
                    value=value,
                    at=T0,
                )
            )
        )


def grant_xp(env: LedgerEnv, member: int, xp: int, n: int, guild: int = G) -> None:
    env.run(
        env.ledger.execute(
            cmd.AdminGrant(
                guild_id=guild,
                command_id=f"grant-{n}",
                member_id=member,
                actor=ADMIN,
                xp=xp,
                at=T0 + timedelta(minutes=n),
            )
        )
    )


def outbox_rows(env: LedgerEnv) -> list[tuple[Any, ...]]:
    return env.sql(
        "SELECT guild_id, position, effect, member_id, status, attempts FROM outbox "
        "ORDER BY position, effect"
    )


def test_level_changes_and_thresholds_become_effects(env: LedgerEnv) -> None:
    roles = {1: 501, 2: 502, 5: 505}
    configure(env, G, level_roles=roles, announcement_channel=900)
    configure(env, G2, level_roles=roles, level_roles_mode="replace")
    grant_xp(env, 10, LEVEL_2_XP, 1)  # 0 -> 2 in G: announced in #900, roles stacked
    grant_xp(env, 11, LEVEL_2_XP, 2, guild=G2)  # 0 -> 2 in G2: only the highest role
    grant_xp(env, 12, 90, 3, guild=G2)
    for n in range(3):  # the third active warning reaches the threshold (a 60 min timeout)
        env.run(
            env.ledger.execute(
                cmd.IssueWarning(
                    guild_id=G, command_id=f"warn-{n}", member_id=13, actor=ADMIN, reason="spam"
                )
            )
        )
    env.run(
        env.ledger.execute(
            cmd.ImportXp(
                guild_id=G,
                command_id="mee6",
                member_id=14,
                actor=ADMIN,
                xp=300,
                source_ref="digest",
            )
        )
    )

    async def scenario(sender: FakeSender) -> None:
        async with running_services(env) as services:
            # member 12's message in #77 takes them to level 1: announced where they spoke
            seen = MessageSeen(G2, 77, 9001, 12, at=T0 + timedelta(hours=1), entropy=0)
            result = await handlers.message_seen(services, seen)
            assert result is not None and not isinstance(result, Exception)
            assert result.level_changes == [(12, 0, 1)]
            await OutboxConsumer(services.pool, services.store).catch_up()
            await OutboxDispatcher(services.pool, sender).drain()

    sender = FakeSender()
    env.run(scenario(sender))
    effects = [
        (d.guild_id, d.effect) for d in sorted(sender.delivered.values(), key=lambda d: d.position)
    ]
    by_member = {(g, e.member_id, type(e).__name__): e for g, e in effects}
    assert by_member[(G, 10, "LevelAnnouncement")] == LevelAnnouncement(
        member_id=10, old_level=0, new_level=2, channel_id=900, at=T0 + timedelta(minutes=1)
    )
    assert by_member[(G, 10, "LevelRoles")] == LevelRoles(
        member_id=10, level=2, add=(501, 502), remove=(505,)
    )
    assert by_member[(G2, 11, "LevelRoles")] == LevelRoles(
        member_id=11, level=2, add=(502,), remove=(501, 505)
    )
    assert by_member[(G2, 11, "LevelAnnouncement")].channel_id == 0  # the guild's fallback
    assert by_member[(G2, 12, "LevelAnnouncement")].channel_id == 77
    action = by_member[(G, 13, "WarningAction")]
    assert isinstance(action, WarningAction) and action.action == "timeout"
    assert action.active_warnings == 3
    # an imported leaderboard brings roles along but is not announced
    assert (G, 14, "LevelRoles") in by_member and (G, 14, "LevelAnnouncement") not in by_member
    assert by_member[(G2, 12, "LevelRoles")] == LevelRoles(
        member_id=12, level=1, add=(501,), remove=(502, 505)
    )
    assert len(effects) == len(by_member) == 8
    assert {status for *_, status, _ in outbox_rows(env)} == {"delivered"}


def level_ups(env: LedgerEnv, members: int) -> None:
    for member in range(members):
        grant_xp(env, 100 + member, 120, member)  # 0 -> 1: one announcement each


def test_consumer_restart_and_rewind_add_nothing_twice(env: LedgerEnv) -> None:
    level_ups(env, 6)

    async def scenario() -> None:
        async with running_services(env) as services:
            first = OutboxConsumer(services.pool, services.store, batch_size=5)
            assert await first.step() == 5  # stops part-way: a restart follows
            second = OutboxConsumer(services.pool, services.store, batch_size=5)
            await second.catch_up()

    env.run(scenario())
    rows = outbox_rows(env)
    assert [(member, effect) for _, _, effect, member, _, _ in rows] == [
        (100 + n, "level_announcement") for n in range(6)
    ]
    env.sql("UPDATE outbox_checkpoint SET tx = '0', position = 0")
    env.run(_catch_up(env))
    assert outbox_rows(env) == rows


async def _catch_up(env: LedgerEnv) -> int:
    return await OutboxConsumer(env.store.pool, env.store).catch_up()


def test_dispatcher_stopped_mid_way_then_restarted_delivers_each_once(
    env: LedgerEnv, fake_sender: FakeSender
) -> None:
    level_ups(env, 6)
    env.run(_catch_up(env))
    fake_sender.block_at = 2  # the second send hangs until the dispatcher is stopped

    async def scenario() -> None:
        first = OutboxDispatcher(env.store.pool, fake_sender, batch_size=4)
        task = asyncio.create_task(first.dispatch_once())
        await fake_sender.blocked.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the stopped dispatcher gave back what it had claimed: a new one takes over at once
        await OutboxDispatcher(env.store.pool, fake_sender).drain()

    env.run(scenario())
    rows = outbox_rows(env)
    assert fake_sender.delivered_keys() == sorted((g, p, e) for g, p, e, *_ in rows)
    assert len(fake_sender.sends) == 7  # the interrupted send was made again
    assert [status for *_, status, _ in rows] == ["delivered"] * 6
    # the interrupted row counts its two attempts; untouched claims were refunded
    assert [attempts for *_, attempts in rows] == [1, 2, 1, 1, 1, 1]


def test_dispatcher_killed_after_a_send_resends_with_the_same_nonce(
    env: LedgerEnv, fake_sender: FakeSender
) -> None:
    level_ups(env, 3)
    env.run(_catch_up(env))
    fake_sender.kill_at = 1

    class KilledDispatcher(OutboxDispatcher):
        async def _release(self, *_: Any) -> None:  # a dead process cleans nothing up
            return None

    async def scenario() -> None:
        with pytest.raises(Killed):
            await KilledDispatcher(env.store.pool, fake_sender, lease_seconds=0).dispatch_once()
        # its lease has run out: another dispatcher claims the row and sends it again
        await OutboxDispatcher(env.store.pool, fake_sender).drain()

    env.run(scenario())
    rows = outbox_rows(env)
    assert len(fake_sender.sends) == 4
    assert fake_sender.sends[0].nonce == fake_sender.sends[1].nonce  # Discord drops the repeat
    assert fake_sender.delivered_keys() == sorted((g, p, e) for g, p, e, *_ in rows)
    assert [status for *_, status, _ in rows] == ["delivered"] * 3


def test_failed_sends_are_retried_with_backoff_then_abandoned(
    env: LedgerEnv, fake_sender: FakeSender
) -> None:
    level_ups(env, 4)
    env.run(_catch_up(env))
    keys = [(g, p, e) for g, p, e, *_ in outbox_rows(env)]
    fake_sender.fail[keys[0]] = 1  # Discord down once
    fake_sender.give_up.add(keys[1])  # the member left
    fake_sender.fail[keys[2]] = 99  # never works

    async def scenario() -> None:
        pool = env.store.pool
        patient = OutboxDispatcher(pool, fake_sender, base_delay=60)
        assert await patient.dispatch_once() == 4
        assert await patient.dispatch_once() == 0  # failures wait for their backoff
        env.sql("UPDATE outbox SET next_attempt_at = now() WHERE status = 'pending'")
        await OutboxDispatcher(pool, fake_sender, base_delay=0, max_attempts=3).drain()

    env.run(scenario())
    state = {(g, p, e): (status, attempts) for g, p, e, _, status, attempts in outbox_rows(env)}
    assert state[keys[0]] == ("delivered", 2)
    assert state[keys[1]] == ("abandoned", 1)
    assert state[keys[2]] == ("abandoned", 3)
    assert state[keys[3]] == ("delivered", 1)
    assert [d.key for d in fake_sender.sends].count(keys[1]) == 1
    errors = env.sql("SELECT last_error FROM outbox WHERE status = 'abandoned' ORDER BY position")
    assert errors == [("GiveUp: member left",), ("RuntimeError: Discord is unavailable",)]
    assert env.run(outbox_status(env.store.pool)) == {"delivered": 2, "abandoned": 2}


def test_a_newer_role_sync_supersedes_an_undelivered_older_one(
    env: LedgerEnv, fake_sender: FakeSender
) -> None:
    configure(env, G, level_roles={1: 501, 2: 502}, level_roles_mode="replace")
    grant_xp(env, 10, 120, 1)  # level 1: role 501
    grant_xp(env, 10, 200, 2)  # level 2: role 502 instead
    env.run(_catch_up(env))
    env.run(OutboxDispatcher(env.store.pool, fake_sender).drain())
    roles = [d.effect for d in fake_sender.sends if isinstance(d.effect, LevelRoles)]
    assert roles == [LevelRoles(member_id=10, level=2, add=(502,), remove=(501,))]
    statuses = env.sql("SELECT status FROM outbox WHERE effect = 'level_roles' ORDER BY position")
    assert statuses == [("superseded",), ("delivered",)]


def test_a_rebuild_never_fires_side_effects_again(env: LedgerEnv, fake_sender: FakeSender) -> None:
    configure(env, G, level_roles={1: 501})
    level_ups(env, 3)

    async def scenario() -> None:
        pool = env.store.pool
        await _catch_up(env)
        await OutboxDispatcher(pool, fake_sender).drain()
        sent = len(fake_sender.sends)
        await rebuild(pool)
        assert await _catch_up(env) == 0
        assert await OutboxDispatcher(pool, fake_sender).drain() == 0
        assert len(fake_sender.sends) == sent == 6

    env.run(scenario())
