"""Log reads keep to their index's order whatever the planner's statistics say.

A log that has just grown (a load, an import, a restore) has no statistics until autovacuum
samples it. The planner then underestimates the rows after a reader's start, and when a read's
limit exceeds its guess it fetches every later row through a bitmap scan and sorts them: each
read of a large backlog costs the whole backlog. Every read rules sorts out for its own
implicit transaction, which leaves the ordered index scan that stops at the limit (D27).

What a read fetched is taken from the server's own counters: `idx_tup_fetch` counts the rows an
ordered index scan fetched from the table, and stays at zero for a bitmap scan.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger.store import Checkpoint
from projections import log
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


async def _delivery(conn: psycopg.AsyncConnection[Any]) -> Batch:
    return await read_batch(conn, Checkpoint(), LIMIT, frozenset())


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


@pytest.mark.parametrize(
    ("index", "read"), [(DELIVERY_INDEX, _delivery), (MEMBER_INDEX, _member_order)]
)
def test_a_read_stops_at_its_limit_on_its_index(
    fresh_log: LedgerEnv, monkeypatch: pytest.MonkeyPatch, index: str, read: Read
) -> None:
    assert _fetched(fresh_log, index, read) == (LIMIT, LIMIT)
    # The control: left to the planner, the same read fetches the rows after its start through
    # a bitmap scan and sorts them, so the assertion above shows the settings at work.
    monkeypatch.setattr(log, "INDEX_ORDER_ONLY", sql.SQL("SELECT 1;\n"))
    assert _fetched(fresh_log, index, read) == (LIMIT, 0)


def test_the_settings_end_with_the_read(env: LedgerEnv) -> None:
    simulate(env, seed=7, count=30)

    async def check() -> list[str]:
        async with await psycopg.AsyncConnection.connect(env.url, autocommit=True) as conn:
            shown: list[str] = []
            await read_batch(conn, Checkpoint(), LIMIT, frozenset())
            shown.append(await _sorts(conn))
            async with conn.transaction():  # a caller's transaction: nothing is set in it
                await read_batch(conn, Checkpoint(), LIMIT, frozenset())
                shown.append(await _sorts(conn))
            return shown

    assert env.run(check()) == ["on on", "on on"]


async def _sorts(conn: psycopg.AsyncConnection[Any]) -> str:
    cur = await conn.execute(
        "SELECT current_setting('enable_sort') || ' ' || current_setting('enable_incremental_sort')"
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])
