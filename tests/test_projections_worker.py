"""Projection workers: catch-up, exactly-once delivery, out-of-order commits, leases, NOTIFY."""

from __future__ import annotations

import asyncio
import gc
import itertools
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger import commands as cmd
from ledger import events as ev
from ledger.store import NOTIFY_CHANNEL
from projections import catch_up, run_workers, status, verify
from projections import engine as engine_module
from projections import worker as worker_module
from projections.engine import Engine
from projections.log import after, current_version_sql, last_below_horizon
from projections.projector import Projector
from projections.projectors import PROJECTORS
from tests.fix_db import LedgerEnv
from tests.fix_projections import (
    G,
    Traffic,
    assert_tables_equal_fold,
    deliver,
    execute_all,
    project,
    simulate,
)

AT = datetime(2024, 6, 1, 12, tzinfo=UTC)

INSERT_EVENT = """
INSERT INTO events (guild_id, stream, version, type, data, meta)
VALUES (%s, %s, %s, %s, %s::jsonb, '{"command_id": "raw"}'::jsonb)
RETURNING position, pg_current_xact_id()::text
"""


def _insert(conn: psycopg.Connection, member: int, version: int, event: ev.Event) -> int:
    row = conn.execute(
        INSERT_EVENT, (G, member, version, ev.event_type(event), ev.encode(event).decode())
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_catch_up_folds_the_log(traffic_env: LedgerEnv) -> None:
    total = traffic_env.sql("SELECT count(*) FROM events")[0][0]
    assert project(traffic_env) == total
    assert_tables_equal_fold(traffic_env)
    assert project(traffic_env) == 0


def test_catch_up_in_steps_matches_one_go(env: LedgerEnv) -> None:
    simulate(env, seed=11, count=120)
    project(env, batch_size=7)
    simulate(env, seed=12, count=120)
    project(env, batch_size=1000)
    assert_tables_equal_fold(env)


def test_out_of_order_commit_reaches_every_projector_once(env: LedgerEnv) -> None:
    """T1 takes the lower position but commits last; neither event is skipped or doubled."""
    env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="early", member_id=3, at=AT)))
    with psycopg.connect(env.url) as t1, psycopg.connect(env.url) as t2:
        low = _insert(t1, 1, 1, ev.MemberJoined(member_id=1, at=AT, starting_balance=25))
        high = _insert(t2, 2, 1, ev.MemberJoined(member_id=2, at=AT, starting_balance=25))
        _insert(
            t2,
            2,
            2,
            ev.XpGranted(member_id=2, at=AT, source="admin", base=50, multiplier_pct=100, xp=50),
        )
        assert low < high
        t2.commit()
        # T2 is committed, but T1 is still open with a lower xid: only the early event may be
        # delivered, or a position-ordered reader would move past `low` for good.
        assert deliver(env) == 1
        assert env.sql("SELECT member_id FROM balances") == [(3,)]
        held = env.run(status(env.store.pool))
        assert all(s.held_back_events == 2 for s in held)
        assert all(
            s.held_back_by is not None and s.held_back_by.pid == t1.info.backend_pid for s in held
        )
        # catch_up owes T2's events (committed before the call): it waits for T1, then names it.
        with pytest.raises(TimeoutError, match=f"pid {t1.info.backend_pid}"):
            env.run(catch_up(env.store.pool, max_wait=0.2))
        t1.commit()
    assert project(env) == 3
    assert sorted(env.sql("SELECT member_id, balance FROM balances")) == [(1, 25), (2, 25), (3, 25)]
    assert_tables_equal_fold(env)
    assert all(
        s.lag_events == 0 and s.held_back_by is None for s in env.run(status(env.store.pool))
    )


def test_catch_up_waits_for_events_an_open_transaction_holds_back(env: LedgerEnv) -> None:
    """An older open transaction without events (a worker's batch, say) keeps events committed
    after it past the horizon; catch_up still owes them: it waits, and says who holds it."""
    env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="j1", member_id=1, at=AT)))
    with psycopg.connect(env.url) as holder:
        holder.execute("SELECT pg_current_xact_id()")  # an xid below the next event's
        env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="j2", member_id=2, at=AT)))
        with pytest.raises(TimeoutError, match=f"pid {holder.info.backend_pid}"):
            env.run(catch_up(env.store.pool, max_wait=0.2))
        assert env.sql("SELECT member_id FROM balances") == [(1,)]
        holder.commit()
        assert env.run(catch_up(env.store.pool)) == 1
    assert sorted(env.sql("SELECT member_id FROM balances")) == [(1,), (2,)]


def test_interleaved_commits_under_load(env: LedgerEnv) -> None:
    """Many transactions committing in shuffled order while a worker keeps catching up."""
    conns = [psycopg.connect(env.url) for _ in range(4)]
    try:
        for round_ in range(6):
            for i, conn in enumerate(conns):
                member = 10 + i
                version = round_ + 1
                event = (
                    ev.MemberJoined(member_id=member, at=AT, starting_balance=25)
                    if round_ == 0
                    else ev.LcMinted(
                        member_id=member, at=AT, amount=round_ * 10 + i, reason="admin"
                    )
                )
                _insert(conn, member, version, event)
            for conn in reversed(conns) if round_ % 2 else conns:
                conn.commit()
                deliver(env, batch_size=3)  # the other connections are still open
    finally:
        for conn in conns:
            conn.close()
    assert_tables_equal_fold(env)


def test_two_concurrent_workers_never_double_apply(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "CLAIM_INTERVAL", 0.05)
    pool = env.store.pool
    commands = Traffic(seed=21).commands(250)

    async def scenario() -> set[int | None]:
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(run_workers(pool, stop=stop, batch_size=9, poll_interval=0.05))
            for _ in range(2)
        ]
        await execute_all(env, commands[:120])
        await catch_up(pool)  # waits for whoever holds the leases
        await execute_all(env, commands[120:])
        await catch_up(pool)
        leases = {s.lease_pid for s in await status(pool)}
        stop.set()
        await asyncio.gather(*workers)
        return leases

    leases = env.run(scenario())
    assert None not in leases and 1 <= len(leases) <= 2
    assert_tables_equal_fold(env)
    # The workers gave their leases back on the way out.
    assert all(s.lease_pid is None for s in env.run(status(pool)))


def test_racing_engines_without_leases_apply_each_batch_once(env: LedgerEnv) -> None:
    """Even with the leases bypassed, the checkpoint compare-and-set lets one batch win."""
    simulate(env, seed=31, count=200)
    pool = env.store.pool

    async def racer(batch_size: int) -> None:
        async with pool.connection() as conn:
            target = await last_below_horizon(conn)
            assert target is not None
            engine = Engine(conn, batch_size=batch_size, raise_errors=True)
            await engine.add(list(PROJECTORS.values()))
            while any(after(target, r.checkpoint) for r in engine.running.values()):
                await engine.step()

    async def race() -> None:
        await asyncio.gather(racer(5), racer(5), racer(8))

    env.run(race())
    assert_tables_equal_fold(env)


def test_worker_wakes_on_notify(env: LedgerEnv) -> None:
    """With polling far away, only the NOTIFY hint can bring the new event in quickly."""
    pool = env.store.pool

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_workers(pool, stop=stop, poll_interval=3600))
        try:
            for _ in range(500):  # the worker claims its leases and goes to sleep
                if all(s.leased for s in await status(pool)):
                    break
                await asyncio.sleep(0.01)
            await env.ledger.execute(cmd.Join(guild_id=G, command_id="j1", member_id=5, at=AT))
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
            for _ in range(1000):
                if (await status(pool))[0].lag_events == 0:
                    break
                await asyncio.sleep(0.01)
            assert all(s.lag_events == 0 for s in await status(pool))
        finally:
            stop.set()
            await task

    env.run(scenario())
    assert env.sql("SELECT balance FROM balances WHERE member_id = 5") == [(25,)]


def test_catch_up_of_selected_projectors_only(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    env.run(catch_up(env.store.pool, ["wallets"]))
    assert env.sql("SELECT count(*) FROM levels") == [(0,)]
    assert env.sql("SELECT count(*) FROM balances")[0][0] > 0
    project(env)
    assert_tables_equal_fold(env)


def test_rows_of_another_schema_version_take_the_decode_path(env: LedgerEnv) -> None:
    """A payload stored at another schema version goes through `ledger.events.decode` (which
    upcasts) and is still delivered in its place in the order."""
    simulate(env, seed=61, count=40)
    with psycopg.connect(env.url) as conn:
        for version, (schema, event) in enumerate(
            [
                (0, ev.MemberJoined(member_id=99, at=AT, starting_balance=30)),
                (1, ev.LcMinted(member_id=99, at=AT, amount=5, reason="admin")),
                (0, ev.LcBurned(member_id=99, at=AT, amount=2, reason="admin")),
            ],
            start=1,
        ):
            conn.execute(
                "INSERT INTO events (guild_id, stream, version, type, schema_version, data, meta) "
                'VALUES (%s, 99, %s, %s, %s, %s::jsonb, \'{"command_id": "old"}\'::jsonb)',
                (G, version, ev.event_type(event), schema, ev.encode(event).decode()),
            )
    simulate(env, seed=62, count=20)
    project(env, batch_size=13)
    assert env.sql("SELECT balance, minted, burned FROM balances WHERE member_id = 99") == [
        (33, 35, 2)
    ]
    assert_tables_equal_fold(env)


def test_the_current_version_of_each_type_is_spelled_out_only_where_it_differs(
    env: LedgerEnv,
) -> None:
    expression = current_version_sql({"a": 1, "b": 2, "c": 1, "d": 3})
    query = sql.SQL("SELECT b.type, {} FROM (VALUES ('a'), ('b'), ('c'), ('d')) AS b(type)")
    with psycopg.connect(env.url) as conn:
        rows = conn.execute(query.format(expression)).fetchall()
    assert dict(rows) == {"a": 1, "b": 2, "c": 1, "d": 3}
    assert current_version_sql({"a": 4, "b": 4}).as_string(None) == "4"


def test_batches_grow_while_a_backlog_keeps_them_full(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    limits: list[int] = []
    real_read = engine_module.read_batch

    async def recording(conn: Any, start: Any, limit: int, types: Any) -> Any:
        limits.append(limit)
        return await real_read(conn, start, limit, types)

    monkeypatch.setattr(engine_module, "read_batch", recording)
    events = env.sql("SELECT count(*) FROM events")[0][0]
    assert env.run(catch_up(env.store.pool, batch_size=10)) == events
    # 10, 20, 40, ... while full; the last read comes back short
    assert limits[:3] == [10, 20, 40] and len(limits) < events // 10
    assert all(b == 2 * a for a, b in itertools.pairwise(limits))
    assert_tables_equal_fold(env)


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record each checkpoint move (projector, events written with it) the engine makes."""
    writes: list[tuple[str, int]] = []
    real = engine_module.checkpoints.advance

    async def counting(conn: Any, name: str, start: Any, end: Any, events: int) -> None:
        writes.append((name, events))
        await real(conn, name, start, end, events)

    monkeypatch.setattr(engine_module.checkpoints, "advance", counting)
    return writes


def _events_handled_by(env: LedgerEnv, name: str) -> int:
    types = list(PROJECTORS[name].type_names())
    (count,) = env.sql("SELECT count(*) FROM events WHERE type = ANY(%s)", (types,))[0]
    return int(count)  # type: ignore[call-overload]


def _assert_wallets_wrote_nothing_and_then_recover(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed catch-up: no checkpoint move, no row; unpatched, it catches up right."""
    assert env.sql("SELECT position FROM projector_checkpoints WHERE projector = 'wallets'") == [
        (0,)
    ]
    assert env.sql("SELECT count(*) FROM balances") == [(0,)]
    monkeypatch.undo()
    project(env)
    assert_tables_equal_fold(env)


def test_a_backlog_is_folded_in_stretches_and_written_once_per_stretch(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    writes = _count_writes(monkeypatch)
    events = env.sql("SELECT count(*) FROM events")[0][0]
    assert env.run(catch_up(env.store.pool, batch_size=10, max_held_events=10**9)) == events
    assert_tables_equal_fold(env)
    # the whole backlog in one write per projector
    assert sorted(name for name, _ in writes) == sorted(PROJECTORS)
    wallets = _events_handled_by(env, "wallets")
    assert dict(writes)["wallets"] == wallets
    # held in stretches of at most 40 events: several writes, same tables
    env.sql(
        "UPDATE projector_checkpoints SET tx = '0', position = 0, events_applied = 0"
        " WHERE projector = 'wallets'"
    )
    env.sql("TRUNCATE balances")
    writes.clear()
    env.run(catch_up(env.store.pool, ["wallets"], batch_size=10, max_held_events=40))
    assert len(writes) > 2 and all(n <= 40 + 40 for _, n in writes)
    assert sum(n for _, n in writes) == wallets
    assert_tables_equal_fold(env)


def test_a_failure_drops_what_was_held_and_writes_nothing(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    wallets = PROJECTORS["wallets"]
    real_apply = type(wallets).apply
    calls = 0

    async def failing(self: Any, batch: Any, state: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("a bug in the third batch")
        await real_apply(self, batch, state)

    monkeypatch.setattr(type(wallets), "apply", failing)
    with pytest.raises(RuntimeError, match="third batch"):
        env.run(catch_up(env.store.pool, ["wallets"], batch_size=10))
    # the two batches folded before it were held, not written
    _assert_wallets_wrote_nothing_and_then_recover(env, monkeypatch)


def _hold_the_first_write_behind_open(
    monkeypatch: pytest.MonkeyPatch, fail: bool = False
) -> list[str]:
    """Make the first write handed behind wait until a batch has been folded since (then fail
    it if `fail`); return the order of hand-offs and folds."""
    order: list[str] = []
    folded_meanwhile = asyncio.Event()
    real_fold = Projector.fold
    real_write = engine_module.Engine._write_on_writer

    async def fold(self: Any, batch: Any, state: Any) -> None:
        if "write handed" in order:
            folded_meanwhile.set()
        order.append("fold")
        await real_fold(self, batch, state)

    async def held_open(write: Any) -> None:
        await asyncio.wait_for(folded_meanwhile.wait(), timeout=60)
        if fail:
            write.close()
            raise RuntimeError("the first write failed")
        await write

    def write_on_writer(self: Any, *args: Any) -> Any:
        order.append("write handed")
        write = real_write(self, *args)
        return held_open(write) if order.count("write handed") == 1 else write

    monkeypatch.setattr(Projector, "fold", fold)
    monkeypatch.setattr(engine_module.Engine, "_write_on_writer", write_on_writer)
    return order


def test_a_write_the_bound_forces_goes_on_beside_the_next_folds(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    writes = _count_writes(monkeypatch)
    order = _hold_the_first_write_behind_open(monkeypatch)
    env.run(catch_up(env.store.pool, batch_size=10, max_held_events=40))
    # the first write forced by the bound was finished only after the next batch was folded
    assert "fold" in order[order.index("write handed") :]
    wallets = _events_handled_by(env, "wallets")
    assert sum(n for name, n in writes if name == "wallets") == wallets
    assert len(writes) > 2 * len(PROJECTORS)
    assert_tables_equal_fold(env)


def test_a_failed_write_behind_drops_what_was_folded_after_it(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    order = _hold_the_first_write_behind_open(monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="first write failed"):
        env.run(catch_up(env.store.pool, ["wallets"], batch_size=10, max_held_events=40))
    assert "fold" in order[order.index("write handed") :]  # folded on beside it
    # neither the failed stretch nor anything folded after it was written
    _assert_wallets_wrote_nothing_and_then_recover(env, monkeypatch)


def test_a_backlog_that_ends_on_a_full_batch_is_written(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    writes = _count_writes(monkeypatch)
    events = int(env.sql("SELECT count(*) FROM events")[0][0])  # type: ignore[call-overload]
    size = next(d for d in range(5, events) if events % d == 0)  # every read comes back full
    pool = env.store.pool

    async def run() -> int:
        async with pool.connection() as conn:
            target = await last_below_horizon(conn)
            assert target is not None
            engine = Engine(conn, batch_size=size, raise_errors=True, max_batch_size=size)
            await engine.add([PROJECTORS["wallets"]])
            reads = []
            while (read := await engine.step()) > 0:
                reads.append(read)
            assert reads == [size] * (events // size)
            return len(writes)

    assert env.run(run()) == 1  # written when the read after the last full one found nothing
    assert env.sql("SELECT position FROM projector_checkpoints WHERE projector = 'wallets'") == (
        env.sql("SELECT max(position) FROM events")
    )
    report = env.run(verify(env.store.pool, ["wallets"]))
    assert report.ok and report.tables[0].rows > 0


def test_folds_run_without_the_cyclic_collector(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catch-up and verify fold with the collector paused, and leave it enabled."""
    simulate(env, seed=5, count=60)
    wallets = type(PROJECTORS["wallets"])
    original = wallets.apply
    seen: list[bool] = []

    async def spying(self: Any, batch: Any, state: Any) -> None:
        seen.append(gc.isenabled())
        await original(self, batch, state)

    monkeypatch.setattr(wallets, "apply", spying)
    env.run(catch_up(env.store.pool, ["wallets"]))
    folded = len(seen)
    assert env.run(verify(env.store.pool, ["wallets"])).ok
    assert folded and len(seen) > folded and not any(seen)
    assert gc.isenabled()
