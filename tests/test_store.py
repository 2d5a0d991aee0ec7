"""The PostgreSQL event store: immutability, migrations, idempotency, optimistic concurrency,
atomic multi-stream appends (DESIGN §3), against a fresh migrated database per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import (
    Conflict,
    CooldownActive,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    LedgerError,
    NotPermitted,
    UnknownItem,
)
from ledger.member import MemberState, decode_state, fold
from ledger.migrations import MigrationError, migrate, migrations_dir
from ledger.service import Outcome
from ledger.store import (
    APPEND,
    AppendBatch,
    Checkpoint,
    DuplicateCommand,
    append_params,
    encode_json,
)
from tests.fix_db import LedgerEnv

G = 7001
OTHER_GUILD = 7002
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
ADMIN = cmd.Actor(1, is_admin=True)
_ids = itertools.count()


def cid(prefix: str = "c") -> str:
    return f"{prefix}-{next(_ids)}"


def counts(env: LedgerEnv) -> tuple[int, int, int]:
    """(events, streams, commands) rows."""
    row = env.sql(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM streams),"
        " (SELECT count(*) FROM commands)"
    )[0]
    return int(row[0]), int(row[1]), int(row[2])  # type: ignore[call-overload]


def execute(env: LedgerEnv, command: cmd.AnyCommand) -> Outcome:
    return env.run(env.ledger.execute(command))


def transfer(
    from_id: int, to_id: int, amount: object, command_id: str | None = None, guild: int = G
) -> cmd.Transfer:
    return cmd.Transfer(
        guild_id=guild,
        command_id=cid("t") if command_id is None else command_id,
        from_id=from_id,
        to_id=to_id,
        amount=amount,  # type: ignore[arg-type]
        at=T0,
    )


def joined_state(balance: int = 25) -> str:
    return encode_json(MemberState(joined=True, balance=balance, xp=0, level=0))


def join_batch(
    guild: int, members_expected: list[tuple[int, int]], command_id: str | None = None
) -> AppendBatch:
    """A hand-built batch appending one `MemberJoined` to each (stream, expected version)."""
    batch = AppendBatch(guild_id=guild, command_ids=[command_id or cid("b")], results=["{}"])
    meta = encode_json(ev.Meta(command_id=batch.command_ids[0]))
    for stream, expected in members_expected:
        batch.streams.append(stream)
        batch.expected.append(expected)
        batch.new_versions.append(expected + 1)
        batch.states.append(joined_state())
        event = ev.MemberJoined(member_id=stream, at=T0, starting_balance=25)
        batch.ev_streams.append(stream)
        batch.ev_versions.append(expected + 1)
        batch.ev_types.append(ev.event_type(event))
        batch.ev_schemas.append(1)
        batch.ev_data.append(ev.encode(event).decode())
        batch.ev_meta.append(meta)
    return batch


# --- immutability --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}'::jsonb",
        "UPDATE events SET recorded_at = now() WHERE position = (SELECT min(position) FROM events)",
        "DELETE FROM events",
        "DELETE FROM events WHERE position = (SELECT max(position) FROM events)",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ],
)
def test_events_are_immutable_even_for_the_owner(env: LedgerEnv, statement: str) -> None:
    execute(env, transfer(1, 2, 10))
    before = env.sql("SELECT position, tx::text, data::text, recorded_at FROM events ORDER BY 1")
    assert len(before) == 4
    with psycopg.connect(env.url, autocommit=True) as conn:
        owner = conn.execute(
            "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'events'"
        ).fetchone()
        assert owner == (True,)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement.encode())
        assert caught.value.sqlstate == "LX001"
    after = env.sql("SELECT position, tx::text, data::text, recorded_at FROM events ORDER BY 1")
    assert after == before


# --- migrations ----------------------------------------------------------------------------------


async def _migrate(url: str, folder: Path | None = None) -> list[str]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        return await migrate(conn, folder)


def test_migrations_are_idempotent(env: LedgerEnv) -> None:
    recorded = env.sql("SELECT version, name FROM schema_migrations ORDER BY version")
    on_disk = sorted(p.name for p in migrations_dir().glob("*.sql"))
    assert [f"{v:03d}_{n}.sql" for v, n in recorded] == on_disk
    assert env.run(_migrate(env.url)) == []
    assert env.run(_migrate(env.url)) == []
    assert env.sql("SELECT count(*) FROM schema_migrations") == [(len(on_disk),)]


def test_a_new_migration_is_applied_once(env: LedgerEnv, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    shutil.copytree(migrations_dir(), folder)
    (folder / "900_probe.sql").write_text("CREATE TABLE probe (id int);\n")
    assert env.run(_migrate(env.url, folder)) == ["900_probe"]
    assert env.run(_migrate(env.url, folder)) == []
    assert env.sql("SELECT count(*) FROM probe") == [(0,)]


def test_an_edited_applied_migration_is_refused(env: LedgerEnv, tmp_path: Path) -> None:
    folder = tmp_path / "sql"
    shutil.copytree(migrations_dir(), folder)
    first = sorted(folder.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a quiet edit\n")
    with pytest.raises(MigrationError, match="edited"):
        env.run(_migrate(env.url, folder))


def test_concurrent_migrations_apply_each_file_once(server_url: str, aio: asyncio.Runner) -> None:
    name = f"migrate_race_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = make_conninfo(server_url, dbname=name)

        async def race() -> list[list[str]]:
            return list(await asyncio.gather(*(_migrate(url) for _ in range(4))))

        results = aio.run(race())
        applied = [n for result in results for n in result]
        expected = [p.stem for p in sorted(migrations_dir().glob("*.sql"))]
        assert sorted(applied) == sorted(expected)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
            assert rows == (len(expected),)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- idempotency ---------------------------------------------------------------------------------


def test_same_command_id_twice_appends_once_and_replays_the_first_outcome(env: LedgerEnv) -> None:
    command = transfer(1, 2, 10, command_id="interaction-1")
    first = execute(env, command)
    assert not first.replayed and len(first.positions) == 4
    before = counts(env)
    again = execute(env, command)
    assert again.replayed
    assert again.positions == first.positions
    assert msgspec.structs.replace(again, replayed=False) == first
    assert counts(env) == before
    # The id decides, not the payload: a different body under a seen id changes nothing.
    changed = execute(env, transfer(1, 2, 20, command_id="interaction-1"))
    assert changed.replayed and changed.positions == first.positions
    assert counts(env) == before
    balances = dict(env.sql("SELECT stream, (state->>'balance')::bigint FROM streams"))
    assert balances == {1: 15, 2: 35}


def test_same_command_id_concurrently_appends_once(env: LedgerEnv) -> None:
    command = cmd.AdminGrant(
        guild_id=G, command_id="grant-once", member_id=5, actor=ADMIN, lc=100, at=T0
    )

    async def race() -> list[Outcome]:
        return list(await asyncio.gather(*(env.ledger.execute(command) for _ in range(8))))

    outcomes = env.run(race())
    assert sum(not o.replayed for o in outcomes) == 1
    assert len({tuple(o.positions) for o in outcomes}) == 1
    assert env.sql("SELECT count(*) FROM events WHERE meta->>'command_id' = 'grant-once'") == [
        (len(outcomes[0].positions),)
    ]
    assert env.sql("SELECT (state->>'balance')::bigint FROM streams WHERE stream = 5") == [(125,)]


def test_command_ids_are_per_guild(env: LedgerEnv) -> None:
    one = execute(env, transfer(1, 2, 5, command_id="shared-id", guild=G))
    two = execute(env, transfer(1, 2, 7, command_id="shared-id", guild=OTHER_GUILD))
    assert not one.replayed and not two.replayed
    assert set(one.positions).isdisjoint(two.positions)
    rows = env.sql(
        "SELECT guild_id, (state->>'balance')::bigint FROM streams WHERE stream = 2 ORDER BY 1"
    )
    assert rows == [(G, 30), (OTHER_GUILD, 32)]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: transfer(1, 2, 1000), InsufficientFunds),
        (lambda: transfer(1, 2, 0), InvalidAmount),
        (lambda: transfer(1, 2, -5), InvalidAmount),
        (lambda: transfer(1, 2, 2.5), InvalidAmount),
        (lambda: transfer(1, 1, 5), InvalidInput),
        (lambda: transfer(1, 2, 5, command_id=""), InvalidInput),
        (lambda: transfer(1, 2, 5, guild=0), InvalidInput),
        (
            lambda: cmd.Transfer(
                guild_id=G, command_id=cid(), from_id=1, to_id=2, amount=5, at=datetime(2024, 1, 1)
            ),
            InvalidInput,
        ),
        (
            lambda: cmd.AdminGrant(
                guild_id=G, command_id=cid(), member_id=1, actor=cmd.Actor(3), lc=5, at=T0
            ),
            NotPermitted,
        ),
        (
            lambda: cmd.UseItem(guild_id=G, command_id=cid(), member_id=1, item="jackpot", at=T0),
            UnknownItem,
        ),
        (lambda: cmd.ClaimDaily(guild_id=G, command_id=cid(), member_id=1, at=T0), CooldownActive),
    ],
)
def test_a_refused_command_appends_nothing(
    env: LedgerEnv, make: object, error: type[LedgerError]
) -> None:
    execute(env, cmd.ClaimDaily(guild_id=G, command_id=cid(), member_id=1, at=T0))
    before = counts(env)
    state_before = env.sql("SELECT stream, version, state::text FROM streams ORDER BY 1")
    command = make()  # type: ignore[operator]
    with pytest.raises(error):
        execute(env, command)
    assert counts(env) == before
    assert env.sql("SELECT stream, version, state::text FROM streams ORDER BY 1") == state_before


# --- optimistic concurrency ----------------------------------------------------------------------


def test_stale_expected_version_is_a_conflict(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(1, 0)])))
    before = counts(env)
    # The stream is at version 1: expecting 0 (create) or 3 are both stale.
    for expected in (0, 3):
        with pytest.raises(Conflict):
            env.run(env.store.append(join_batch(G, [(1, expected)])))
    assert counts(env) == before
    # Expecting the right version succeeds (the batch itself is well-formed).
    positions = env.run(env.store.append(join_batch(G, [(1, 1)])))
    assert len(positions) == 1
    assert env.sql("SELECT version FROM streams WHERE guild_id = %s AND stream = 1", (G,)) == [(2,)]


def test_ledger_append_reports_a_stale_version_by_sqlstate(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(1, 0)])))
    batch = join_batch(G, [(1, 4)])
    with psycopg.connect(env.url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(APPEND, append_params(batch))
        assert caught.value.sqlstate == "LX409"


def test_append_refuses_a_stream_read_at_an_older_version(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(2, 0)])))  # stream 2 is at version 1
    batch = join_batch(G, [(1, 0)])
    batch.read_streams, batch.read_versions = [2, 3], [0, 0]  # 2 was read before it existed
    with pytest.raises(Conflict):
        env.run(env.store.append(batch))
    assert env.sql("SELECT count(*) FROM streams WHERE stream = 1") == [(0,)]
    batch.read_versions = [1, 0]  # as they are: appended
    env.run(env.store.append(batch))
    assert env.sql("SELECT version FROM streams WHERE stream = 1") == [(1,)]


def test_append_refuses_a_batch_that_refused_an_already_recorded_command(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(1, 0)], command_id="first")))
    batch = join_batch(G, [(2, 0)])
    batch.unseen_ids = ["first"]  # decided (and refused) as if it were new
    with pytest.raises(DuplicateCommand):
        env.run(env.store.append(batch))
    assert env.sql("SELECT count(*) FROM streams WHERE stream = 2") == [(0,)]
    batch.unseen_ids = ["never-seen"]
    env.run(env.store.append(batch))
    assert env.sql("SELECT count(*) FROM commands WHERE command_id = 'never-seen'") == [(0,)]


def test_a_stale_read_is_retried_by_the_service_from_fresh_state(env: LedgerEnv) -> None:
    execute(env, transfer(1, 2, 5))
    real_load = env.store.load
    calls = 0

    async def stale_then_real(*args: object, **kwargs: object) -> object:
        # The first load answers from a moment before someone else spent 20 of member 1's LC.
        nonlocal calls
        calls += 1
        loaded = await real_load(*args, **kwargs)  # type: ignore[arg-type]
        if calls == 1:
            await env.ledger.execute(transfer(1, 3, 20))
        return loaded

    env.store.load = stale_then_real  # type: ignore[method-assignment]
    try:
        with pytest.raises(InsufficientFunds):
            execute(env, transfer(1, 2, 10))
    finally:
        env.store.load = real_load  # type: ignore[method-assignment]
    assert calls >= 2
    balances = dict(env.sql("SELECT stream, (state->>'balance')::bigint FROM streams"))
    assert balances == {1: 0, 2: 30, 3: 45}


# --- atomic multi-stream append ------------------------------------------------------------------


def test_a_failing_second_stream_leaves_nothing_of_the_first(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(2, 0)])))
    before = counts(env)
    batch = join_batch(G, [(1, 0), (2, 7)], command_id="half")  # stream 2 is at 1, not 7
    with pytest.raises(Conflict):
        env.run(env.store.append(batch))
    assert counts(env) == before
    assert env.sql("SELECT count(*) FROM streams WHERE stream = 1") == [(0,)]
    assert env.sql("SELECT count(*) FROM events WHERE stream = 1") == [(0,)]
    assert env.sql("SELECT count(*) FROM commands WHERE command_id = 'half'") == [(0,)]


def test_a_failing_event_insert_rolls_back_every_stream(env: LedgerEnv) -> None:
    env.run(env.store.append(join_batch(G, [(2, 0)])))
    before = counts(env)
    batch = join_batch(G, [(1, 0), (2, 1)])
    batch.ev_versions[1] = 1  # collides with the event already at stream 2 version 1
    with pytest.raises(Conflict):
        env.run(env.store.append(batch))
    assert counts(env) == before
    assert env.sql("SELECT version FROM streams WHERE stream = 2") == [(1,)]


def test_transfer_halves_commit_together(env: LedgerEnv) -> None:
    out = execute(env, transfer(1, 2, 10))
    rows = env.sql(
        "SELECT type, tx::text FROM events WHERE position = ANY(%s) ORDER BY position",
        (out.positions,),
    )
    assert [r[0] for r in rows] == [
        "member_joined",
        "member_joined",
        "transfer_sent",
        "transfer_received",
    ]
    assert len({r[1] for r in rows}) == 1  # one transaction


# --- state rows, reads and reverts through the service -------------------------------------------


def test_state_rows_equal_the_fold_of_each_stream(env: LedgerEnv) -> None:
    execute(env, transfer(1, 2, 10))
    execute(env, cmd.ClaimDaily(guild_id=G, command_id=cid(), member_id=2, at=T0))
    execute(
        env,
        cmd.GrantMessageXp(
            guild_id=G, command_id=cid(), member_id=1, channel_id=9, message_id=99, at=T0
        ),
    )
    execute(
        env, cmd.AdminGrant(guild_id=G, command_id=cid(), member_id=3, actor=ADMIN, xp=500, at=T0)
    )
    for stream, version, state in env.sql("SELECT stream, version, state::text FROM streams"):
        recorded = env.run(env.store.stream_events(G, stream))  # type: ignore[arg-type]
        assert [r.version for r in recorded] == list(range(1, version + 1))  # type: ignore[operator]
        assert fold([r.event for r in recorded]) == decode_state(state)  # type: ignore[arg-type]


def test_stored_rows_leave_out_default_fields_but_keep_the_headline_figures(
    env: LedgerEnv,
) -> None:
    """D25: state rows and command records omit fields at their defaults; a state row always
    carries joined, balance, xp and level (balance 0 included), and a full row of the earlier
    form still decodes to the same state."""
    first = execute(env, transfer(1, 2, 25))  # member 1 is left with 0 LC
    rows = dict(env.sql("SELECT stream, state FROM streams WHERE stream > 0"))
    assert rows[1] == {"joined": True, "balance": 0, "xp": 0, "level": 0}
    assert rows[2] == {"joined": True, "balance": 50, "xp": 0, "level": 0}
    [(result,)] = env.sql("SELECT result FROM commands WHERE command_id = %s", (first.command_id,))
    assert set(result) == {"command_id", "value", "events", "members"}  # type: ignore[arg-type]
    again = execute(env, transfer(1, 2, 25, command_id=first.command_id))
    assert msgspec.structs.replace(again, replayed=False, positions=[]) == (
        msgspec.structs.replace(first, positions=[])
    )
    earlier_form = (
        '{"xp": 0, "items": {}, "level": 0, "joined": true, "balance": 43, "invited": false,'
        ' "reverted": [], "warnings": [], "daily_day": 0, "reactions": {}, "multiplier": null,'
        ' "imported_xp": 0, "daily_streak": 0, "voice_seconds": 0, "last_message_xp_at": null}'
    )
    assert decode_state(earlier_form) == MemberState(joined=True, balance=43, xp=0, level=0)


def test_read_delivers_every_committed_event_once_in_tx_position_order(env: LedgerEnv) -> None:
    for n in range(5):
        execute(env, transfer(1, 2, 1, guild=G if n % 2 else OTHER_GUILD))
    delivered: list[ev.Recorded] = []
    checkpoint = Checkpoint()
    while batch := env.run(env.store.read(checkpoint, limit=3)):
        delivered.extend(batch)
        checkpoint = Checkpoint(batch[-1].tx, batch[-1].position)
    keys = [(r.tx, r.position) for r in delivered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert sorted(r.position for r in delivered) == [
        row[0] for row in env.sql("SELECT position FROM events ORDER BY position")
    ]


def test_revert_through_the_service(env: LedgerEnv) -> None:
    sent = execute(env, transfer(1, 2, 10))
    debit = sent.positions[2]
    reverted = execute(
        env,
        cmd.Revert(guild_id=G, command_id=cid(), actor=ADMIN, positions=(debit,), at=T0),
    )
    assert reverted.events == ["reverted", "reverted"]
    assert reverted.members[1].balance == 25 and reverted.members[2].balance == 25
    before = counts(env)
    again = execute(
        env,
        cmd.Revert(guild_id=G, command_id=cid(), actor=ADMIN, positions=(debit,), at=T0),
    )
    assert again.events == [] and again.note == "already_reverted"
    assert counts(env) == before
    # Another guild cannot name this guild's positions.
    with pytest.raises(InvalidInput):
        execute(
            env,
            cmd.Revert(
                guild_id=OTHER_GUILD, command_id=cid(), actor=ADMIN, positions=(debit,), at=T0
            ),
        )


def test_revert_refused_when_a_balance_would_go_negative(env: LedgerEnv) -> None:
    granted = execute(
        env, cmd.AdminGrant(guild_id=G, command_id=cid(), member_id=1, actor=ADMIN, lc=100, at=T0)
    )
    execute(env, transfer(1, 2, 120))
    before = counts(env)
    minted = granted.positions[-1]
    with pytest.raises(InsufficientFunds):
        execute(
            env,
            cmd.Revert(guild_id=G, command_id=cid(), actor=ADMIN, positions=(minted,), at=T0),
        )
    assert counts(env) == before


def test_message_xp_cooldown_through_the_service(env: LedgerEnv) -> None:
    def msg(at: datetime) -> cmd.GrantMessageXp:
        return cmd.GrantMessageXp(
            guild_id=G, command_id=cid(), member_id=1, channel_id=9, message_id=1, at=at
        )

    assert execute(env, msg(T0)).appended
    blocked = execute(env, msg(T0 + timedelta(seconds=30)))
    assert not blocked.appended and blocked.note == "cooldown"
    assert execute(env, msg(T0 + timedelta(seconds=60))).appended
    assert env.sql("SELECT count(*) FROM events WHERE type = 'xp_granted'") == [(2,)]


@pytest.mark.parametrize(
    "command",
    [
        cmd.Revert(guild_id=G, command_id="r-bool", actor=ADMIN, positions=(True,), at=T0),
        cmd.Revert(guild_id=G, command_id="r-float", actor=ADMIN, positions=(1.5,), at=T0),  # type: ignore[arg-type]
        cmd.Revert(guild_id=G, command_id="r-zero", actor=ADMIN, positions=(0,), at=T0),
        cmd.Revert(guild_id=G, command_id="r-huge", actor=ADMIN, positions=(2**63,), at=T0),
        cmd.Revert(guild_id=G, command_id="r-none", actor=ADMIN, positions=(), at=T0),
        transfer(1, 2, 5, command_id="x" * 129),
        transfer(1, 2, 5, command_id="tab\there"),
        transfer(1, 2, 5, guild=2**64),
        transfer(2**63, 2, 5),
        cmd.Join(guild_id=G, command_id="j", member_id=True, at=T0),  # type: ignore[arg-type]
    ],
    ids=[
        "bool",
        "float",
        "zero",
        "beyond-bigint",
        "none",
        "long-id",
        "tab-id",
        "guild",
        "member",
        "member-bool",
    ],
)
def test_bad_input_through_the_service_is_a_ledger_error(
    env: LedgerEnv, command: cmd.AnyCommand
) -> None:
    before = counts(env)
    with pytest.raises(InvalidInput) as caught:
        execute(env, command)
    assert caught.value.message and len(caught.value.message) <= 200
    assert counts(env) == before
