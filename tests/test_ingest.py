"""The batched XP path keeps the single-command invariants: idempotency, cooldown, atomicity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from ledger import commands as cmd
from ledger.errors import InsufficientFunds, InvalidInput
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.member import MemberState
from ledger.service import Outcome
from ledger.state_cache import StateCache
from tests.fix_db import LedgerEnv

G = 7001
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def message(n: int, member: int, at: datetime, guild: int = G) -> cmd.GrantMessageXp:
    return cmd.GrantMessageXp(
        guild_id=guild,
        command_id=f"msg-{n}",
        member_id=member,
        channel_id=5,
        message_id=1000 + n,
        at=at,
        entropy=n,
    )


def test_batch_grants_once_per_cooldown_and_is_idempotent(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    # member 1 sends three messages within one minute and one after it; member 2 one message
    batch = [
        message(1, 1, T0),
        message(2, 1, T0 + timedelta(seconds=10)),
        message(3, 2, T0 + timedelta(seconds=11)),
        message(4, 1, T0 + timedelta(seconds=59)),
        message(5, 1, T0 + timedelta(seconds=61)),
    ]
    results = env.run(ingestor.ingest(batch))
    assert all(isinstance(r, Outcome) for r in results)
    granted = [r.command_id for r in results if isinstance(r, Outcome) and r.appended]
    assert granted == ["msg-1", "msg-3", "msg-5"]
    notes = {r.command_id: r.note for r in results if isinstance(r, Outcome)}
    assert notes["msg-2"] == notes["msg-4"] == "cooldown"
    events_before = env.sql("SELECT count(*) FROM events")[0][0]
    # the same batch again appends nothing and answers from the records
    again = env.run(ingestor.ingest(batch))
    assert [r.replayed for r in again if isinstance(r, Outcome) and r.appended] == [True] * 3
    assert env.sql("SELECT count(*) FROM events")[0][0] == events_before
    xp_rows = env.sql(
        "SELECT stream, sum((data->>'xp')::int) FROM events WHERE type = 'xp_granted' "
        "GROUP BY stream ORDER BY stream"
    )
    state_xp = env.sql(
        "SELECT stream, (state->>'xp')::int FROM streams WHERE stream > 0 ORDER BY 1"
    )
    assert xp_rows == state_xp


def test_bad_grant_is_refused_alone(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    bad = cmd.GrantMessageXp(
        guild_id=G, command_id="bad", member_id=-5, channel_id=5, message_id=1, at=T0
    )
    results = env.run(ingestor.ingest([message(1, 1, T0), bad]))
    assert isinstance(results[0], Outcome) and results[0].appended
    assert isinstance(results[1], InvalidInput)
    assert env.sql("SELECT count(*) FROM events WHERE meta->>'command_id' = 'bad'")[0][0] == 0


def test_batcher_coalesces_concurrent_submits(env: LedgerEnv) -> None:
    async def scenario() -> list[object]:
        batcher = CommandBatcher(BatchIngestor(env.store), max_batch=50, max_delay=0.05)
        runner = asyncio.create_task(batcher.run())
        try:
            return await asyncio.gather(
                *(batcher.submit(message(n, 100 + n, T0, guild=G + n % 2)) for n in range(40))
            )
        finally:
            runner.cancel()

    results = env.run(scenario())
    assert all(isinstance(r, Outcome) and r.appended for r in results)
    # 40 grants for 40 new members: far fewer transactions than grants
    txs = env.sql("SELECT count(DISTINCT tx) FROM events")[0][0]
    assert txs < 40
    assert env.sql("SELECT count(*) FROM events WHERE type = 'xp_granted'")[0][0] == 40


def test_a_config_change_in_a_batch_applies_to_later_commands(env: LedgerEnv) -> None:
    admin = cmd.Actor(1, is_moderator=True, is_admin=True)
    batch: list[cmd.AnyCommand] = [
        cmd.ChangeConfig(
            guild_id=G, command_id="cfg", actor=admin, key="starting_balance", value=70
        ),
        cmd.Join(guild_id=G, command_id="join", member_id=5, at=T0),
    ]
    results = env.run(BatchIngestor(env.store).ingest(batch))
    assert isinstance(results[1], Outcome) and results[1].members[5].balance == 70
    stored = env.sql("SELECT (state->>'starting_balance')::int FROM streams WHERE stream = 0")
    assert stored == [(70,)]


def test_concurrent_set_edits_do_not_overwrite_each_other(env: LedgerEnv) -> None:
    admin = cmd.Actor(1, is_moderator=True, is_admin=True)

    async def both() -> None:
        await asyncio.gather(
            *(
                env.ledger.execute(
                    cmd.ChangeConfig(
                        guild_id=G,
                        command_id=f"add{c}",
                        actor=admin,
                        key="no_xp_channels",
                        value=[c],
                        op="add",
                    )
                )
                for c in (101, 102, 103)
            )
        )
        await env.ledger.execute(
            cmd.ChangeConfig(
                guild_id=G,
                command_id="rm",
                actor=admin,
                key="no_xp_channels",
                value=102,
                op="remove",
            )
        )

    env.run(both())
    stored = env.sql("SELECT state->'no_xp_channels' FROM streams WHERE stream = 0")[0][0]
    assert sorted(stored) == [101, 103]  # type: ignore[arg-type]


# --- remembered state rows (D20) -----------------------------------------------------------------


def join(member: int) -> cmd.Join:
    return cmd.Join(guild_id=G, command_id=f"join-{member}", member_id=member, at=T0)


def pay(name: str, from_id: int, to_id: int, amount: int) -> cmd.Transfer:
    return cmd.Transfer(
        guild_id=G, command_id=name, from_id=from_id, to_id=to_id, amount=amount, at=T0
    )


def balances(env: LedgerEnv) -> dict[int, int]:
    rows = env.sql("SELECT stream, (state->>'balance')::int FROM streams WHERE stream > 0")
    return {int(stream): int(balance) for stream, balance in rows}  # type: ignore[call-overload]


def test_a_row_written_elsewhere_is_reloaded_not_overwritten(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    env.run(ingestor.ingest([join(1), join(2)]))  # remembered at 25 LC each
    env.run(env.ledger.execute(pay("elsewhere", 1, 2, 20)))  # another writer: 1 has 5 now
    [result] = env.run(ingestor.ingest([pay("stale", 1, 2, 10)]))
    assert isinstance(result, InsufficientFunds)
    assert balances(env) == {1: 5, 2: 45}


def test_a_refusal_is_not_decided_on_a_row_moved_elsewhere(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    env.run(ingestor.ingest([join(1), join(2)]))  # remembered at 25 LC each
    env.run(env.ledger.execute(pay("elsewhere", 2, 1, 20)))  # 1 has 45 now
    # From the remembered row (25) this would be refused and nothing appended: the refusal
    # must be confirmed against the rows as they are.
    [result] = env.run(ingestor.ingest([pay("fresh", 1, 2, 40)]))
    assert isinstance(result, Outcome) and result.appended
    assert balances(env) == {1: 5, 2: 45}


def test_a_config_changed_elsewhere_applies_to_remembered_members(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    env.run(ingestor.ingest([join(1)]))  # member 1 and the default config remembered
    admin = cmd.Actor(9, is_moderator=True, is_admin=True)
    for key in ("message_xp_max", "message_xp_min"):
        change = cmd.ChangeConfig(guild_id=G, command_id=key, actor=admin, key=key, value=900)
        env.run(env.ledger.execute(change))
    [result] = env.run(ingestor.ingest([message(1, 1, T0)]))
    assert isinstance(result, Outcome) and result.appended
    assert result.members[1].xp == 900


def test_state_cache_forgets_the_least_recently_written_rows_first() -> None:
    cache = StateCache(max_rows=2)
    state = MemberState(joined=True, balance=0, xp=0, level=0)
    cache.remember(G, None, {1: 1, 2: 1}, {1: state, 2: state})
    cache.remember(G, None, {1: 2}, {1: state})  # 1 written again: 2 is now the oldest
    cache.remember(G, None, {3: 1, 4: 1}, {3: state})  # 4 has no state row: not kept
    assert cache.members(G, [1, 2, 3, 4])[0] == {1: 2, 3: 1}
    cache.forget(G, [3])
    assert cache.members(G, [1, 2, 3, 4])[0] == {1: 2}
