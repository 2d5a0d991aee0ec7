"""Checkpoints and leases.

A projector's checkpoint row is advanced with a compare-and-set in the same transaction as its
table changes: the update names the checkpoint the batch started from, so if anyone else moved
it (another worker, a rebuild's swap) the update matches nothing and the batch rolls back. That
alone makes every batch apply exactly once. Leases, session advisory locks, make sure that
normally only one worker spends effort on a projector: PostgreSQL releases them when the holding
session ends, so a dead worker's projectors are taken over at the next claim.
"""

from __future__ import annotations

import zlib
from typing import Any

import psycopg

from ledger.store import Checkpoint

# Advisory lock namespaces (the first int4 of the two-key form): leases, and rebuilds in progress.
LEASE_CLASS = 0x4C50
REBUILD_CLASS = 0x4C52

ENSURE = """
INSERT INTO projector_checkpoints (projector) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING
"""

LOAD = """
SELECT projector, tx::text, position FROM projector_checkpoints WHERE projector = ANY(%s::text[])
"""

ADVANCE = """
UPDATE projector_checkpoints
   SET tx = %s::text::xid8, position = %s, events_applied = events_applied + %s, updated_at = now()
 WHERE projector = %s AND tx = %s::text::xid8 AND position = %s
"""

TRY_LOCK = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK = "SELECT pg_advisory_unlock(%s, %s)"


class CheckpointMoved(Exception):
    """The checkpoint changed under a batch (a rebuild swapped tables in, or another worker)."""


def lock_id(name: str) -> int:
    """A stable int4 for a projector's advisory locks."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


async def ensure(conn: psycopg.AsyncConnection[Any], names: list[str]) -> None:
    """Create missing checkpoint rows (at the start of the log)."""
    await conn.execute(ENSURE, (names,))


async def load(conn: psycopg.AsyncConnection[Any], names: list[str]) -> dict[str, Checkpoint]:
    """The checkpoints of `names` (missing rows are absent)."""
    cur = await conn.execute(LOAD, (names,))
    return {name: Checkpoint(int(tx), pos) for name, tx, pos in await cur.fetchall()}


async def advance(
    conn: psycopg.AsyncConnection[Any], name: str, start: Checkpoint, end: Checkpoint, applied: int
) -> None:
    """Move a checkpoint from `start` to `end`; raise CheckpointMoved if it is not at `start`."""
    cur = await conn.execute(
        ADVANCE, (str(end.tx), end.position, applied, name, str(start.tx), start.position)
    )
    if cur.rowcount != 1:
        raise CheckpointMoved(name)


async def try_lock(conn: psycopg.AsyncConnection[Any], lock_class: int, name: str) -> bool:
    """Take a session advisory lock on `name` in `lock_class` without waiting."""
    cur = await conn.execute(TRY_LOCK, (lock_class, lock_id(name)))
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: psycopg.AsyncConnection[Any], lock_class: int, name: str) -> None:
    """Release a session advisory lock taken with `try_lock`."""
    await conn.execute(UNLOCK, (lock_class, lock_id(name)))
