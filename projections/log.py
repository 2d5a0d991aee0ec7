"""Reading the log in delivery order, below the snapshot horizon, in batches.

Positions are allocated at insert but transactions commit in another order, so a reader that
took `position > checkpoint` would skip an event whose transaction commits late. Events are read
in `(tx, position)` order and only when `tx < pg_snapshot_xmin(pg_current_snapshot())`: every
transaction that could still add an event before that point has finished. (Order by the column
`e.tx`, never by a selected `tx::text`: that would sort xids as text, '100' before '99'.)

Speed: PostgreSQL assembles a batch into one JSON array, `[[1, tx, position, guild, event],
...]`, which msgspec decodes into `Delivered` structs in a single call, with no per-row Python
work. Rows of types nobody asked for come as `[0, tx, position, guild]` (they still move the
checkpoint); rows written at an older schema version come as `[2, tx, position, guild, type,
version, payload]` and go through `ledger.events.decode`, which upcasts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any

import msgspec
import psycopg
from psycopg import pq, sql

from ledger import events as ev
from ledger.store import Checkpoint
from projections.projector import Delivered

# The end of delivery order: reads without an upper bound use it.
END = Checkpoint(tx=2**64 - 1, position=2**63 - 1)


class _Skipped(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=0):
    tx: int
    position: int
    guild_id: int


class _Stored(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=2):
    tx: int
    position: int
    guild_id: int
    type_name: str
    schema_version: int
    data: str


_decode_rows = msgspec.json.Decoder(list[Delivered | _Skipped | _Stored]).decode


def current_version_sql(versions: dict[str, int]) -> sql.Composable:
    """The current schema version of a row's type `b.type`, from `versions` (a constant of the
    code, composed once with literals): the most common version, with a CASE for the types at
    another. Only rows whose type a projector asked for (all known types) reach the test. A
    CASE naming every type cost 7% of a delivery-order read (string compares on every row).
    """
    common = Counter(versions.values()).most_common(1)[0][0]
    others = sorted((name, v) for name, v in versions.items() if v != common)
    if not others:
        return sql.Literal(common)
    return sql.SQL("CASE b.type {} ELSE {} END").format(
        sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(sql.Literal(name), sql.Literal(v))
            for name, v in others
        ),
        sql.Literal(common),
    )


_CURRENT_VERSION = current_version_sql(ev.SCHEMA_VERSIONS)


def _assemble(order: str, rows: str, cursor: bool) -> sql.Composed:
    """SELECT one JSON array of the rows of subquery `rows` (aliased b), in `order`; with
    `cursor`, also the last (guild, stream, version) read (member order continues from it;
    delivery order continues from the last row and skips the aggregate, 5% of a read)."""
    last = ",\n       max(ARRAY[b.guild_id, b.stream, b.version])" if cursor else ""
    return sql.SQL("""
SELECT '[' || string_agg(
         CASE
           WHEN b.type <> ALL(%(types)s::text[])
             THEN concat('[0,', b.tx, ',', b.position, ',', b.guild_id, ']')
           WHEN b.schema_version = {current}
             THEN concat('[1,', b.tx, ',', b.position, ',', b.guild_id, ',', b.data, ']')
           ELSE concat('[2,', b.tx, ',', b.position, ',', b.guild_id, ',',
                       to_json(b.type), ',', b.schema_version, ',', to_json(b.data::text), ']')
         END, ',' ORDER BY {order}) || ']'{last}
  FROM ({rows}) AS b
""").format(current=_CURRENT_VERSION, order=sql.SQL(order), rows=sql.SQL(rows), last=sql.SQL(last))


READ_BATCH = _assemble(
    "b.tx, b.position",
    """
    SELECT e.tx, e.position, e.guild_id, e.stream, e.version, e.type, e.schema_version, e.data
      FROM events e
     WHERE (e.tx, e.position) > (%(tx)s::text::xid8, %(position)s)
       AND (e.tx, e.position) <= (%(until_tx)s::text::xid8, %(until_position)s)
       AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY e.tx, e.position
     LIMIT %(limit)s""",
    cursor=False,
)

# Member order, for rebuilds: each stream's events in version order (which is its delivery
# order), every event below a fixed horizon, along the (guild_id, stream, version) index.
READ_MEMBER_CHUNK = _assemble(
    "b.guild_id, b.stream, b.version",
    """
    SELECT e.tx, e.position, e.guild_id, e.stream, e.version, e.type, e.schema_version, e.data
      FROM events e
     WHERE (e.guild_id, e.stream, e.version) > (%(guild)s, %(stream)s, %(version)s)
       AND (e.guild_id, e.stream) < (%(stop_guild)s, %(stop_stream)s)
       AND e.tx < %(horizon)s::text::xid8
     ORDER BY e.guild_id, e.stream, e.version
     LIMIT %(limit)s""",
    cursor=True,
)

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"

LAST_BEFORE = """
SELECT e.tx::text, e.position FROM events e
 WHERE e.tx < %s::text::xid8
 ORDER BY e.tx DESC, e.position DESC
 LIMIT 1
"""

LAST_BELOW_HORIZON = """
SELECT e.tx::text, e.position
  FROM events e
 WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY e.tx DESC, e.position DESC
 LIMIT 1
"""

LAST_COMMITTED = """
SELECT e.tx::text, e.position FROM events e ORDER BY e.tx DESC, e.position DESC LIMIT 1
"""

COUNT_BELOW_HORIZON = """
SELECT count(*) FROM events e WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())
"""


def after(point: Checkpoint, other: Checkpoint) -> bool:
    """True when `point` comes after `other` in delivery order."""
    return (point.tx, point.position) > (other.tx, other.position)


@dataclass
class Batch:
    """Events read in one go: the decoded ones of the wanted types, and where reading stopped."""

    events: list[Delivered] = field(default_factory=list)
    end: Checkpoint | None = None  # the last (tx, position) read, wanted or not
    read: int = 0  # rows read, wanted or not
    classes: list[type[ev.Event]] = field(default_factory=list)  # of each event, in order

    def handled_by(self, handles: frozenset[type[ev.Event]]) -> list[Delivered]:
        """The events of the classes in `handles`, in order."""
        if handles.issuperset(self.classes):  # busy projectors handle all: no copy
            return self.events
        return list(compress(self.events, map(handles.__contains__, self.classes)))


async def read_batch(
    conn: psycopg.AsyncConnection[Any],
    start: Checkpoint,
    limit: int,
    types: Collection[str],
    until: Checkpoint = END,
) -> Batch:
    """Up to `limit` committed events after `start` (and not after `until`), in delivery order.

    Only events whose type is in `types` are decoded; the others still move `end` forward, so a
    projector with rare events does not rescan the same stretch of log on every poll. The read
    keeps to the delivery index whatever the planner's statistics say (INDEX_ORDER_ONLY).
    """
    batch, _ = await _read(
        conn,
        READ_BATCH,
        {
            "types": list(types),
            "tx": str(start.tx),
            "position": start.position,
            "until_tx": str(until.tx),
            "until_position": until.position,
            "limit": limit,
        },
    )
    return batch


MemberCursor = tuple[int, int, int]  # (guild_id, stream, version)
MemberKey = tuple[int, int]  # (guild_id, stream)
# Bounds of member order: before every stream, and after every stream (no member id is 2**63-1:
# Discord ids are below 2**63 - 1, and the guild's own stream is 0).
FIRST_MEMBER: MemberKey = (-(2**63), -(2**63))
LAST_MEMBER: MemberKey = (2**63 - 1, 2**63 - 1)


async def read_member_chunk(
    conn: psycopg.AsyncConnection[Any],
    start: MemberCursor,
    horizon: str,
    limit: int,
    types: Collection[str],
    stop: MemberKey = LAST_MEMBER,
) -> tuple[Batch, MemberCursor | None]:
    """Up to `limit` events after `start` in member order, all with `tx < horizon` (rebuilds).

    Each stream's events come in its delivery order; streams follow each other, up to (not
    including) stream `stop`. The batch's `end` is unset (this is not delivery order); the
    cursor to continue from is returned. The read keeps to the member index (INDEX_ORDER_ONLY).
    """
    guild, stream, version = start
    params = {
        "stop_guild": stop[0],
        "stop_stream": stop[1],
        "types": list(types),
        "guild": guild,
        "stream": stream,
        "version": version,
        "horizon": horizon,
        "limit": limit,
    }
    batch, cursor = await _read(conn, READ_MEMBER_CHUNK, params)
    batch.end = None
    return batch, cursor


# A read must walk its index in order and stop at its limit. Left to the planner it may
# not: without statistics (a log that has just grown by a load or an import, before autovacuum
# samples it) the planner underestimates the rows after the start, and when the limit exceeds
# its guess it fetches every one of them and sorts them (a fresh 1M-event catch-up: 11 reads,
# 6.4 s instead of 2.0 s); and a member-order chunk whose range ends inside a guild was planned,
# with statistics, as a scan of the whole guild and an incremental sort of it. Each read of a
# large backlog then costs the whole backlog (docs/decisions.md D27). Ruling both sorts out for
# the read leaves the ordered index scan (a live poll pays about 70 us for it, 0.41 ms against
# 0.34 ms for a 50-event read).
#
# The settings and the read go as one message of two statements (client-side binding, the
# simple protocol): one implicit transaction, so the settings end with the read, and one send,
# so a prefetched read runs in the server while Python folds. As separate statements each round
# trip waited for the event loop, which the fold holds for a tenth of a second at a time: the
# read started only after the fold (a busy catch-up 171k -> 140k events/s). A read inside a
# caller's transaction (a rebuild's swap reading its short tail) would keep the settings for
# the rest of it, so it goes without them.
INDEX_ORDER_ONLY = sql.SQL(
    "SELECT set_config('enable_sort', 'off', true),"
    " set_config('enable_incremental_sort', 'off', true);\n"
)


async def _read(
    conn: psycopg.AsyncConnection[Any], query: sql.Composed, params: dict[str, Any]
) -> tuple[Batch, MemberCursor | None]:
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        guarded = psycopg.AsyncClientCursor(conn)
        await guarded.execute(INDEX_ORDER_ONLY + query, params)
        guarded.nextset()
        row = await guarded.fetchone()
    else:
        cur = conn.cursor(binary=True)
        await cur.execute(query, params)
        row = await cur.fetchone()
    if row is None or row[0] is None:
        return Batch(), None
    rows = _decode_rows(row[0])
    batch = Batch(read=len(rows))
    last = rows[-1]
    batch.end = Checkpoint(tx=last.tx, position=last.position)
    if _Stored in set(map(type, rows)):
        batch.events = [_upcast(r) for r in rows if not isinstance(r, _Skipped)]
    else:
        batch.events = [r for r in rows if type(r) is Delivered]
    batch.classes = list(map(type, map(_event_of, batch.events)))
    if len(row) == 1:
        return batch, None
    guild, stream, version = row[1]
    return batch, (guild, stream, version)


_event_of = attrgetter("event")


def _upcast(row: Delivered | _Stored) -> Delivered:
    if isinstance(row, Delivered):
        return row
    event = ev.decode(row.data, row.type_name, row.schema_version)
    return Delivered(row.tx, row.position, row.guild_id, event)


async def horizon(conn: psycopg.AsyncConnection[Any]) -> str:
    """The snapshot horizon now: every transaction below it has finished."""
    cur = await conn.execute(HORIZON)
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def last_before(conn: psycopg.AsyncConnection[Any], point: str) -> Checkpoint | None:
    """The last event in delivery order with `tx < point` (None when there is none)."""
    cur = await conn.execute(LAST_BEFORE, (point,))
    row = await cur.fetchone()
    return Checkpoint(tx=int(row[0]), position=row[1]) if row else None


async def last_below_horizon(conn: psycopg.AsyncConnection[Any]) -> Checkpoint | None:
    """The last event every reader can see now (None for an empty log)."""
    cur = await conn.execute(LAST_BELOW_HORIZON)
    row = await cur.fetchone()
    return Checkpoint(tx=int(row[0]), position=row[1]) if row else None


async def last_committed(conn: psycopg.AsyncConnection[Any]) -> Checkpoint | None:
    """The last committed event in delivery order, delivered or held back (None: empty log).

    An open transaction older than it keeps it past the horizon until that one ends: a reader
    may not pass it before, or it could skip the older transaction's events.
    """
    cur = await conn.execute(LAST_COMMITTED)
    row = await cur.fetchone()
    return Checkpoint(tx=int(row[0]), position=row[1]) if row else None


async def count_below_horizon(conn: psycopg.AsyncConnection[Any]) -> int:
    """How many events every reader can see now (a rebuild's progress total)."""
    cur = await conn.execute(COUNT_BELOW_HORIZON)
    row = await cur.fetchone()
    return int(row[0]) if row else 0
