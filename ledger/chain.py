"""The hash chain over each guild's events: sealing it, and verifying the log against it.

An event's link is `sha256(previous link || canonical bytes of the event)`, per guild, in the
log's delivery order `(tx, position)`. The sealer works like a projector: it reads committed
events below the snapshot horizon after its checkpoint and writes their links and the new
checkpoint in one transaction; a session advisory lock makes it the only sealer. Appends never
wait for it. `verify_chain` recomputes every link from the log and names the first event whose
link disagrees: an event changed (or deleted) by someone who bypassed the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.store import EVENT_COLUMNS, READ_AFTER

SEALER_LOCK_ID = 0x1ED6E9
GENESIS = b"\x00" * 32

GUILD_IN_ORDER = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %s AND (tx, position) <= (%s::text::xid8, %s)
 ORDER BY tx, position
"""  # noqa: S608 (a constant column list, no input)
CHECKPOINT = "SELECT tx::text, position FROM chain_checkpoint"
HEADS = "SELECT guild_id, seq, hash FROM chain_heads WHERE guild_id = ANY(%s::bigint[])"
INSERT_HASHES = """
INSERT INTO event_hashes (guild_id, position, seq, hash)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bytea[])
"""
UPSERT_HEADS = """
INSERT INTO chain_heads (guild_id, seq, position, hash)
SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::bytea[])
ON CONFLICT (guild_id) DO UPDATE
   SET seq = excluded.seq, position = excluded.position, hash = excluded.hash
"""
ADVANCE = "UPDATE chain_checkpoint SET tx = %s::text::xid8, position = %s"
GUILDS = "SELECT DISTINCT guild_id FROM chain_heads ORDER BY 1"
STORED = "SELECT position, seq, hash FROM event_hashes WHERE guild_id = %s ORDER BY seq"


def canonical(row: Sequence[object]) -> bytes:
    """The bytes an event's link covers: every stored column, tx excepted (it is the order)."""
    position, _tx, guild, stream, version, type_name, schema, data, meta, recorded_at = row
    recorded = recorded_at.isoformat()  # type: ignore[attr-defined]
    return (
        f"{position}|{guild}|{stream}|{version}|{type_name}|{schema}|{recorded}|{data}|{meta}"
    ).encode()


def link(previous: bytes, row: Sequence[object]) -> bytes:
    """The chain link of an event."""
    return hashlib.sha256(previous + canonical(row)).digest()


async def seal_batch(conn: psycopg.AsyncConnection, limit: int = 5000) -> int:
    """Seal the next batch after the checkpoint, in one transaction; returns events sealed.

    The caller must hold the sealer lease (`SEALER_LOCK_ID`)."""
    async with conn.transaction():
        cur = await conn.execute(CHECKPOINT)
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(READ_AFTER, (row[0], row[1], limit))
        rows = await cur.fetchall()
        if not rows:
            return 0
        guilds = sorted({r[2] for r in rows})
        cur = await conn.execute(HEADS, (guilds,))
        heads = {g: (seq, bytes(h), 0) for g, seq, h in await cur.fetchall()}
        guild_ids: list[int] = []
        positions: list[int] = []
        seqs: list[int] = []
        hashes: list[bytes] = []
        for event in rows:
            guild, position = event[2], event[0]
            seq, previous, _ = heads.get(guild, (0, GENESIS, 0))
            digest = link(previous, event)
            heads[guild] = (seq + 1, digest, position)
            guild_ids.append(guild)
            positions.append(position)
            seqs.append(seq + 1)
            hashes.append(digest)
        await conn.execute(INSERT_HASHES, (guild_ids, positions, seqs, hashes))
        await conn.execute(
            UPSERT_HEADS,
            (
                guilds,
                [heads[g][0] for g in guilds],
                [heads[g][2] for g in guilds],
                [heads[g][1] for g in guilds],
            ),
        )
        await conn.execute(ADVANCE, (rows[-1][1], rows[-1][0]))
        return len(rows)


async def seal(pool: AsyncConnectionPool, limit: int = 5000) -> int:
    """Seal everything committed below the horizon; 0 when another sealer holds the lease."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (SEALER_LOCK_ID,))
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        try:
            total = 0
            while sealed := await seal_batch(conn, limit):
                total += sealed
            return total
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SEALER_LOCK_ID,))


async def run_sealer(pool: AsyncConnectionPool, stop: asyncio.Event, interval: float = 0.5) -> None:
    """Keep the chain sealed until `stop` is set."""
    while not stop.is_set():
        await seal(pool)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


@dataclass
class ChainReport:
    """What verifying the chain found."""

    guilds: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every sealed link matches the log."""
        return not self.problems


async def verify_chain(pool: AsyncConnectionPool, guild_id: int | None = None) -> ChainReport:
    """Recompute each guild's chain from the log up to the sealer's checkpoint and compare."""
    report = ChainReport()
    async with pool.connection() as conn:
        cur = await conn.execute(CHECKPOINT)
        checkpoint = await cur.fetchone()
        assert checkpoint is not None
        if guild_id is None:
            cur = await conn.execute(GUILDS)
            guilds = [r[0] for r in await cur.fetchall()]
        else:
            guilds = [guild_id]
    for guild in guilds:
        report.guilds += 1
        problem = await _verify_guild(pool, guild, checkpoint[0], checkpoint[1], report)
        if problem:
            report.problems.append(problem)
    return report


async def _verify_guild(
    pool: AsyncConnectionPool, guild: int, tx: str, position: int, report: ChainReport
) -> str | None:
    async with pool.connection() as conn:
        cur = await conn.execute(STORED, (guild,))
        stored = await cur.fetchall()
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(name="chain") as cursor,
    ):
        await cursor.execute(GUILD_IN_ORDER, (guild, tx, position))
        previous = GENESIS
        index = 0
        async for event in cursor:
            report.events += 1
            if index >= len(stored):
                return f"guild {guild}: event {event[0]} is in the log but was never sealed"
            expected_position, seq, digest = stored[index]
            if event[0] != expected_position:
                return (
                    f"guild {guild}: link {seq} was sealed for event {expected_position}, "
                    f"but the log has event {event[0]} there (an event was removed or inserted)"
                )
            previous = link(previous, event)
            if previous != bytes(digest):
                return (
                    f"guild {guild}: event {event[0]} (link {seq}) differs from when it was sealed"
                )
            index += 1
    if index < len(stored):
        return f"guild {guild}: event {stored[index][0]} was sealed but is no longer in the log"
    return None
