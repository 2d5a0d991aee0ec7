"""The bulk part of a rebuild: fold the log member by member into fresh shadow tables.

When every projector being rebuilt is member-local (`Projector.member_local`), the order in
which different members' events are folded does not matter, only each stream's own order. So
the log below a fixed horizon is read along the `(guild_id, stream, version)` index, a stream
at a time. Once the fold has moved past a member, no later event can touch that member's rows:
they are written out with a plain COPY (no merge, no read-back) and forgotten. Memory holds one
chunk of events, the open member's rows and the rows waiting to be written, whatever the size of
the guild. Reading the next chunk and writing finished rows run on their own connections while
Python folds, each write its own short transaction.

A fold covers one range of streams, so ranges can be folded side by side by several processes
(`projections.partitions`). Tables that are not one member's are left out of the bulk fold and
derived from the complete others afterwards (`Projector.derive`), so no two ranges ever write
the same row.

Afterwards the rebuild continues in delivery order from the last event below that horizon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from projections.log import Batch, MemberKey, read_member_chunk
from projections.projector import Overlay, Projector
from projections.tables import Key, Table, TableIO

SHADOW_SCHEMA = "projection_shadow"
_json = msgspec.json.Encoder()


class Shadow:
    """A projector being rebuilt: its overlay over its shadow tables, and what it folded."""

    def __init__(self, projector: Projector, io: TableIO) -> None:
        self.projector = projector
        self.io = io
        self.state = Overlay(projector.tables, io, live=False)
        self.state.fresh = True
        self.applied = 0


async def fold_batch(shadows: Sequence[Shadow], batch: Batch) -> None:
    """Give each projector being rebuilt the events of its types."""
    for shadow in shadows:
        events = batch.handled_by(shadow.projector.handles)
        if events:
            await shadow.projector.fold(events, shadow.state)
            shadow.applied += len(events)


# The shadow tables by name and oid: a rebuild's identity for its worker processes.
SHADOW_OIDS = """
SELECT c.relname::text, c.oid::int8 FROM pg_class c
 WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'
"""
# Inside a write's transaction, after its tables are locked: are they still the ones we mean?
SAME_SHADOWS = """
SELECT count(*) FROM json_each_text(%s::json) AS s(name, oid)
 WHERE to_regclass(format('%%I.%%I', %s::text, s.name))::oid::int8 IS DISTINCT FROM s.oid::int8
"""


class ShadowsReplaced(RuntimeError):
    """The shadow tables are not the ones this fold was started for (a newer rebuild's)."""


async def shadow_oids(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """The shadow tables that exist now, by name."""
    cur = await conn.execute(SHADOW_OIDS, (SHADOW_SCHEMA,))
    return {name: oid for name, oid in await cur.fetchall()}


async def _write(
    conn: psycopg.AsyncConnection[Any],
    finished: list[tuple[Table, list[Key]]],
    owned: dict[str, int] | None,
) -> None:
    if not finished:
        return
    io = TableIO(conn, SHADOW_SCHEMA)
    async with conn.transaction():
        if owned is not None:
            # A worker process outliving its rebuild must never write into the shadows of the
            # next one: lock the tables (as COPY would), then check they are the same tables.
            await conn.execute(
                sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(io.ident(table) for table, _ in finished)
                )
            )
            mine = {table.name: owned.get(table.name, 0) for table, _ in finished}
            cur = await conn.execute(SAME_SHADOWS, (_json.encode(mine).decode(), SHADOW_SCHEMA))
            row = await cur.fetchone()
            if row is None or row[0]:
                raise ShadowsReplaced("the shadow tables were replaced: another rebuild started")
        for table, rows in finished:
            await io.insert(table, rows)


async def fold_range(
    reader: psycopg.AsyncConnection[Any],
    writer: psycopg.AsyncConnection[Any],
    shadows: Sequence[Shadow],
    point: str,
    members: tuple[MemberKey, MemberKey],
    chunk_size: int,
    max_rows: int,
    progress: Callable[[int], None],
    owned: dict[str, int] | None = None,
) -> int:
    """Fold the events below horizon `point` of the streams in `[first, stop)` = `members`.

    Every row is written to the shadows before it returns (the overlays are left empty); returns
    the events read. With `owned` (shadow table oids by name, from `shadow_oids`), every write
    first checks that the shadows are still those tables (ShadowsReplaced if not).
    """
    first, stop = members
    types = frozenset().union(*(s.projector.type_names() for s in shadows))
    for shadow in shadows:
        shadow.state.io = None  # nothing to read back: the shadows only hold finished members
        shadow.state.bulk = True
    done = 0
    writing: asyncio.Future[None] | None = None
    start = (*first, -(2**63))
    next_read = asyncio.ensure_future(
        read_member_chunk(reader, start, point, chunk_size, types, stop)
    )
    try:
        while True:
            batch, cursor = await next_read
            if cursor is None:
                break
            if batch.read == chunk_size:
                next_read = asyncio.ensure_future(
                    read_member_chunk(reader, cursor, point, chunk_size, types, stop)
                )
            await fold_batch(shadows, batch)
            done += batch.read
            progress(done)
            if batch.read < chunk_size:
                break
            if sum(s.state.size() for s in shadows) > max_rows:
                finished = [t for s in shadows for t in s.state.take_finished(cursor[:2])]
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(_write(writer, finished, owned))
        if writing is not None:
            await writing
        await _write(writer, [t for s in shadows for t in s.state.take_finished(None)], owned)
    finally:
        # Reads or writes still in flight after an error must end before the connections go
        # back to the pool.
        with contextlib.suppress(Exception):
            await next_read
        if writing is not None:
            with contextlib.suppress(Exception):
                await writing
    for shadow in shadows:
        shadow.state.clear()
        shadow.state.io = shadow.io
        shadow.state.bulk = False
        shadow.state.fresh = False
    return done
