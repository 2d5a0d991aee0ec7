"""Backlog reads keep to their index's order whatever the planner's statistics say.

A log that has just grown (a load, an import, a restore) has no statistics until autovacuum
samples it. The planner then underestimates the rows after a reader's start, and when a read's
limit exceeds its guess it fetches every later row through a bitmap scan and sorts them: each
read of a large backlog costs the whole backlog. A backlog read (a catch-up's, a rebuild's, a
verify's) rules sorts out for its own transaction, which leaves the ordered index scan that
stops at the limit (D27).

What a read fetched is taken from the server's own counters: `idx_tup_fetch` counts the rows an
ordered index scan fetched from the table, and stays at zero for a bitmap scan.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest

from ledger.store import Checkpoint
from projections import catch_up, log
from projections import engine as engine_module
from projections.log import Batch, horizon, read_batch, read_member_chunk
from tests.fix_db import LedgerEnv
from tests.fix_projections import G, simulate

LOG_ROWS = 5_000
LIMIT = 1_000

# Rows of a type no reader asks for: they come back as positions only, nothing to decode.
GROW_LOG = """
INSERT INTO events (guild_id, stream, version, type, data, meta)
SELECT %s, s, 1, 'bulk_loaded', '{}'::jsonb, '{"command_id": "load"}'::jsonb
  FROM generate_series(1, %s) AS s
"""

# Flushed at the end of the reading connection's next statement (PostgreSQL 15+).
FLUSH_STATS = "SELECT pg_stat_force_next_flush()"
FETCHED_BY_INDEX = """
SELECT coalesce(sum(idx_tup_fetch), 0) FROM pg_stat_user_indexes
 WHERE relname = 'events' AND indexrelname = %s
"""
DELIVERY_INDEX = "events_delivery"
MEMBER_INDEX = "events_guild_id_stream_version_key"

Read = Callable[[psycopg.AsyncConnection[Any]], Awaitable[Batch]]


async def _delivery(conn: psycopg.AsyncConnection[Any], backlog: bool) -> Batch:
    return await read_batch(conn, Checkpoint(), LIMIT, frozenset(), backlog=backlog)


async def _member_order(conn: psycopg.AsyncConnection[Any]) -> Batch:
    # Up to a stream inside the guild, as a rebuild's first range ends.
    start = (G, 0, -(2**63))
    batch, _ = await read_member_chunk(
        conn, start, await horizon(conn), LIMIT, frozenset(), stop=(G, LOG_ROWS - 100)
    )
    return batch


def _fetched(env: LedgerEnv, index: str, read: Read) -> tuple[int, int]:
    """Run `read`; return (events read, rows fetched through `index` meanwhile)."""

    async def go() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:

            async def fetched() -> int:
                await conn.execute(FLUSH_STATS)
                cur = await conn.execute(FETCHED_BY_INDEX, (index,))
                row = await cur.fetchone()
                assert row is not None
                return int(row[0])

            before = await fetched()
            batch = await read(conn)
            return batch.read, await fetched() - before

    return env.run(go())


@pytest.fixture
def fresh_log(env: LedgerEnv) -> LedgerEnv:
    """A log that has just grown by LOG_ROWS events and has never been analysed."""
    env.sql(GROW_LOG, (G, LOG_ROWS))
    [(tuples,)] = env.sql("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
    assert tuples < 0  # no statistics: the planner guesses from the table's size
    return env


def test_a_backlog_read_stops_at_its_limit_on_the_delivery_index(fresh_log: LedgerEnv) -> None:
    assert _fetched(fresh_log, DELIVERY_INDEX, lambda conn: _delivery(conn, True)) == (
        LIMIT,
        LIMIT,
    )


def test_without_it_the_planner_fetches_the_whole_backlog(fresh_log: LedgerEnv) -> None:
    # The control: the same read left to the planner misses the index order, so the test above
    # shows the guard at work and not a plan the planner would have picked anyway.
    assert _fetched(fresh_log, DELIVERY_INDEX, lambda conn: _delivery(conn, False)) == (LIMIT, 0)


def test_a_member_order_chunk_stops_at_its_limit_on_the_member_index(
    fresh_log: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _fetched(fresh_log, MEMBER_INDEX, _member_order) == (LIMIT, LIMIT)
    # The control: with the guard made a no-op, the planner sorts the range instead.
    monkeypatch.setattr(log, "INDEX_ORDER_ONLY", "SELECT 1")
    assert _fetched(fresh_log, MEMBER_INDEX, _member_order) == (LIMIT, 0)


def test_the_setting_ends_with_the_read(env: LedgerEnv) -> None:
    simulate(env, seed=7, count=30)

    async def check() -> list[str]:
        async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
            shown = []
            await read_batch(conn, Checkpoint(), LIMIT, frozenset(), backlog=True)
            shown.append(await _show_sort(conn))
            async with conn.transaction():  # a caller's transaction: nothing is set in it
                await read_batch(conn, Checkpoint(), LIMIT, frozenset(), backlog=True)
                shown.append(await _show_sort(conn))
            return shown

    assert env.run(check()) == ["on", "on"]


async def _show_sort(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute("SHOW enable_sort")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


def test_a_catch_up_reads_as_a_backlog_until_a_read_comes_back_short(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate(env, seed=11, count=120)
    seen: list[tuple[bool, bool]] = []  # (came back short, read as a backlog)
    real = engine_module.read_batch

    async def spy(conn: Any, start: Checkpoint, limit: int, *args: Any, **kwargs: Any) -> Any:
        batch = await real(conn, start, limit, *args, **kwargs)
        seen.append((batch.read < limit, kwargs.get("backlog", False)))
        return batch

    monkeypatch.setattr(engine_module, "read_batch", spy)
    env.run(catch_up(env.store.pool, batch_size=40))
    # Full reads, then a short one that ends the backlog; every one of them expects a backlog
    # (the log holds several batches), and no read after the short one does.
    first_short = next(i for i, (short, _) in enumerate(seen) if short)
    assert first_short >= 2
    assert all(backlog for _, backlog in seen[: first_short + 1])
    assert not any(backlog for _, backlog in seen[first_short + 1 :])
