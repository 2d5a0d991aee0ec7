"""Statements, point-in-time state and reverts, checked against folds of the log."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta

import pytest

from ledger import commands as cmd
from ledger.audit import Cutoff, guild_as_of, select_for_revert, statement
from ledger.consistency import check_guild
from ledger.errors import InsufficientFunds, InvalidInput, LedgerError
from ledger.member import NEW_MEMBER, evolve
from tests.fix_db import LedgerEnv

G = 4242
ADMIN = cmd.Actor(9, is_moderator=True, is_admin=True)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def history(env: LedgerEnv, seed: int, steps: int = 80) -> None:
    """A random mixed history among five members."""
    rng = random.Random(seed)
    print(f"history seed {seed}")
    for n in range(steps):
        at = T0 + timedelta(minutes=n)
        a, b = rng.sample(range(1, 6), 2)
        base = {"guild_id": G, "command_id": f"h{seed}-{n}", "at": at}
        choice = rng.choice(["msg", "transfer", "daily", "game", "grant", "item"])
        command: cmd.AnyCommand
        if choice == "msg":
            command = cmd.GrantMessageXp(**base, member_id=a, channel_id=3, message_id=n + 1)
        elif choice == "transfer":
            command = cmd.Transfer(**base, from_id=a, to_id=b, amount=rng.randint(1, 30))
        elif choice == "daily":
            command = cmd.ClaimDaily(**base, member_id=a)
        elif choice == "game":
            bet = rng.choice([0, 5, 10])
            command = cmd.RecordGame(
                **base, member_id=a, game="dice", won=n % 2 == 0, bet=bet, payout=2 * bet * (n % 2)
            )
        elif choice == "grant":
            command = cmd.AdminGrant(**base, member_id=a, actor=ADMIN, lc=40, xp=100)
        else:
            command = cmd.GrantItem(**base, member_id=a, item="jackpot", item_source="game")
        with contextlib.suppress(LedgerError):  # refusals are part of a real history
            env.run(env.ledger.execute(command))


def test_statement_running_figures_equal_the_fold_at_every_line(env: LedgerEnv) -> None:
    history(env, seed=11)
    for member in range(1, 6):
        result = env.run(statement(env.store.pool, G, member))
        events = env.run(env.store.stream_events(G, member))
        assert [line.position for line in result.lines] == [r.position for r in events]
        state = NEW_MEMBER
        for line, recorded in zip(result.lines, events, strict=True):
            state = evolve(state, recorded.event)
            assert (line.balance, line.xp, line.level) == (state.balance, state.xp, state.level)
            assert line.description and line.command_id
        stored = env.sql(
            "SELECT (state->>'balance')::bigint, (state->>'xp')::bigint FROM streams "
            "WHERE guild_id = %s AND stream = %s",
            (G, member),
        )
        if stored:
            assert (result.closing.balance, result.closing.xp) == stored[0]


def test_state_at_a_position_equals_the_fold_of_the_prefix(env: LedgerEnv) -> None:
    history(env, seed=12)
    positions = [row[0] for row in env.sql("SELECT position FROM events ORDER BY position")]
    cut = positions[len(positions) // 2]
    as_of = env.run(guild_as_of(env.store.pool, G, Cutoff(position=cut)))
    expected: dict[int, object] = {}
    for member in range(1, 6):
        state = NEW_MEMBER
        for recorded in env.run(env.store.stream_events(G, member)):
            if recorded.position <= cut:
                state = evolve(state, recorded.event)
        if state != NEW_MEMBER:
            expected[member] = state
    assert as_of == expected
    # the full replay equals the state rows
    full = env.run(guild_as_of(env.store.pool, G))
    assert {m: s.balance for m, s in full.items()} == dict(
        env.sql("SELECT stream, (state->>'balance')::bigint FROM streams WHERE stream > 0")
    )


def test_revert_preview_appends_nothing_and_revert_restores_balances(env: LedgerEnv) -> None:
    env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="j1", member_id=1, at=T0)))
    env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="j2", member_id=2, at=T0)))
    before = env.sql("SELECT stream, state->>'balance' FROM streams ORDER BY 1")
    abuse = cmd.Actor(7, is_moderator=True, is_admin=True)
    for n in range(3):
        env.run(
            env.ledger.execute(
                cmd.AdminGrant(
                    guild_id=G,
                    command_id=f"abuse{n}",
                    member_id=1 + n % 2,
                    actor=abuse,
                    lc=500,
                    at=T0 + timedelta(minutes=n),
                )
            )
        )
    env.run(
        env.ledger.execute(
            cmd.Transfer(guild_id=G, command_id="tx", from_id=1, to_id=2, amount=10, at=T0)
        )
    )
    positions = env.run(select_for_revert(env.store.pool, G, actor_id=7))
    assert len(positions) == 3
    revert = cmd.Revert(guild_id=G, command_id="rv1", actor=ADMIN, positions=tuple(positions))
    count = env.sql("SELECT count(*) FROM events")[0][0]
    preview = env.run(env.ledger.preview(revert))
    assert preview.events.count("reverted") == 3 and not preview.positions
    assert env.sql("SELECT count(*) FROM events")[0][0] == count
    # the transfer moved 10 LC: member 1 keeps 25 + 1000 - 10 -> reverting leaves 15 and 35
    env.run(env.ledger.execute(revert))
    after = dict(env.sql("SELECT stream, (state->>'balance')::bigint FROM streams ORDER BY 1"))
    assert after == {1: int(before[0][1]) - 10, 2: int(before[1][1]) + 10}
    again = env.run(env.ledger.execute(revert))
    assert again.replayed
    # a new revert of the same positions appends nothing: they are already reverted
    second = env.run(
        env.ledger.execute(
            cmd.Revert(guild_id=G, command_id="rv2", actor=ADMIN, positions=tuple(positions))
        )
    )
    assert second.note == "already_reverted" and not second.events
    assert env.run(check_guild(env.store.pool, G)).ok


def test_revert_that_would_go_negative_is_refused(env: LedgerEnv) -> None:
    grant = env.run(
        env.ledger.execute(
            cmd.AdminGrant(guild_id=G, command_id="g", member_id=1, actor=ADMIN, lc=100, at=T0)
        )
    )
    env.run(
        env.ledger.execute(
            cmd.Transfer(guild_id=G, command_id="t", from_id=1, to_id=2, amount=120, at=T0)
        )
    )
    minted = [p for p, t in zip(grant.positions, grant.events, strict=True) if t == "lc_minted"]
    count = env.sql("SELECT count(*) FROM events")[0][0]
    with pytest.raises(InsufficientFunds):
        env.run(
            env.ledger.execute(
                cmd.Revert(guild_id=G, command_id="r", actor=ADMIN, positions=tuple(minted))
            )
        )
    assert env.sql("SELECT count(*) FROM events")[0][0] == count


def test_revert_selection_needs_a_criterion(env: LedgerEnv) -> None:
    with pytest.raises(InvalidInput):
        env.run(select_for_revert(env.store.pool, G))


def test_revert_with_clamp_takes_back_what_is_left_and_records_the_shortfall(
    env: LedgerEnv,
) -> None:
    grant = env.run(
        env.ledger.execute(
            cmd.AdminGrant(guild_id=G, command_id="g", member_id=1, actor=ADMIN, lc=100, at=T0)
        )
    )
    env.run(
        env.ledger.execute(
            cmd.Transfer(guild_id=G, command_id="t", from_id=1, to_id=2, amount=120, at=T0)
        )
    )
    minted = tuple(
        p for p, t in zip(grant.positions, grant.events, strict=True) if t == "lc_minted"
    )
    refused = cmd.Revert(guild_id=G, command_id="r", actor=ADMIN, positions=minted)
    with pytest.raises(InsufficientFunds) as caught:
        env.run(env.ledger.execute(refused))
    assert "short of 95 LC" in caught.value.message and "clamp" in caught.value.message
    clamped = cmd.Revert(
        guild_id=G, command_id="r2", actor=ADMIN, positions=minted, on_shortfall="clamp"
    )
    outcome = env.run(env.ledger.execute(clamped))
    assert outcome.members[1].balance == 0
    data = env.sql("SELECT data FROM events WHERE type = 'reverted'")[0][0]
    assert data["lc_delta"] == -5 and data["shortfall"] == 95  # type: ignore[index]
    assert env.run(check_guild(env.store.pool, G)).ok
