"""The PostgreSQL event store: load write-side state, append atomically, read in delivery order.

Every append is one call of the `ledger_append` SQL function: one round trip, one transaction.
Reads deliver events in `(tx, position)` order and only below the snapshot horizon
(`pg_snapshot_xmin`), so an event whose transaction commits after a higher position is
delivered in its turn instead of being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pgerr
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ledger import events as ev
from ledger.errors import Conflict, DatabaseUnavailable
from ledger.guild_config import DEFAULT_CONFIG, GuildConfig
from ledger.member import MemberState, decode_state
from ledger.pgarrays import Int2s, Int8s, Texts

NOTIFY_CHANNEL = "ledger_events"
CONFIG_STREAM = 0

_config_decoder = msgspec.json.Decoder(GuildConfig)
_encoder = msgspec.json.Encoder()


class DuplicateCommand(Exception):
    """The command id was already recorded (raised by `append`, handled by the service)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A reader's place in delivery order: the last `(tx, position)` it has processed."""

    tx: int = 0
    position: int = 0


@dataclass
class Loaded:
    """What a command needs before deciding: config, members' state rows, a seen result."""

    config: GuildConfig
    config_version: int
    versions: dict[int, int]
    states: dict[int, MemberState]
    seen: dict[str, bytes] = field(default_factory=dict)  # command id -> recorded result


@dataclass
class AppendBatch:
    """Everything one transaction appends for one guild."""

    guild_id: int
    command_ids: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    streams: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    new_versions: list[int] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    ev_streams: list[int] = field(default_factory=list)
    ev_versions: list[int] = field(default_factory=list)
    ev_types: list[str] = field(default_factory=list)
    ev_schemas: list[int] = field(default_factory=list)
    ev_data: list[str] = field(default_factory=list)
    ev_meta: list[str] = field(default_factory=list)
    # Streams the decisions read but did not write, at the versions they were read at.
    read_streams: list[int] = field(default_factory=list)
    read_versions: list[int] = field(default_factory=list)
    # Refused command ids (not recorded): the append fails as a duplicate if one was.
    unseen_ids: list[str] = field(default_factory=list)


def append_params(batch: AppendBatch) -> tuple[Any, ...]:
    """The parameters of `APPEND` for `batch`, in the function's order."""
    return (
        batch.guild_id,
        Texts(batch.command_ids),
        Texts(batch.results),
        Int8s(batch.streams),
        Int8s(batch.expected),
        Int8s(batch.new_versions),
        Texts(batch.states),
        Int8s(batch.ev_streams),
        Int8s(batch.ev_versions),
        Texts(batch.ev_types),
        Int2s(batch.ev_schemas),
        Texts(batch.ev_data),
        Texts(batch.ev_meta),
        batch.guild_id,  # again, for the read checks
        Int8s(batch.read_streams),
        Int8s(batch.read_versions),
        Texts(batch.unseen_ids),
    )


LOAD = """
SELECT 0 AS kind, command_id, 0::bigint AS stream, 0::bigint AS version, result::text
  FROM commands WHERE guild_id = %(guild)s AND command_id = ANY(%(ids)s::text[])
UNION ALL
SELECT 1, NULL, stream, version, state::text
  FROM streams WHERE guild_id = %(guild)s AND stream = ANY(%(streams)s::bigint[])
"""

# Binary parameters (%b): text-format arrays would make the driver escape every quote of
# every JSON payload, which cost more CPU than everything else on the append path. The arrays
# are packed by `ledger.pgarrays` (one known element type each).
APPEND = """
SELECT ledger_check_reads(
    ledger_append(
        %b, %b::text[], %b::text[]::jsonb[], %b::bigint[], %b::bigint[], %b::bigint[],
        %b::text[]::jsonb[], %b::bigint[], %b::bigint[], %b::text[], %b::smallint[],
        %b::text[]::jsonb[], %b::text[]::jsonb[]),
    %b, %b::bigint[], %b::bigint[], %b::text[])
"""

COMMAND_RESULT = """
SELECT c.result::text,
       coalesce(array(SELECT e.position FROM events e
                       WHERE e.tx = c.tx AND e.guild_id = c.guild_id
                         AND e.meta->>'command_id' = c.command_id
                       ORDER BY e.position), '{}')
  FROM commands c WHERE c.guild_id = %s AND c.command_id = %s
"""

# Every stored column of an event, in the order `row_to_recorded` reads them. The xid is
# selected as text under another name: ORDER BY tx must bind to the xid8 column, not to it.
EVENT_COLUMNS = (
    "position, tx::text AS tx_text, guild_id, stream, version, type, schema_version, "
    "data::text, meta::text, recorded_at"
)

READ_AFTER = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE (tx, position) > (%s::text::xid8, %s)
   AND tx < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY tx, position
 LIMIT %s
"""  # noqa: S608 (a constant column list, no input)

READ_POSITIONS = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %s AND position = ANY(%s::bigint[])
UNION
SELECT {EVENT_COLUMNS} FROM events other
 WHERE (other.tx, other.guild_id, other.meta->>'command_id') IN (
        SELECT tx, guild_id, meta->>'command_id' FROM events
         WHERE guild_id = %s AND position = ANY(%s::bigint[])
           AND type IN ('transfer_sent', 'transfer_received'))
   AND other.type IN ('transfer_sent', 'transfer_received')
 ORDER BY 1
"""  # noqa: S608 (a constant column list, no input)

READ_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %s AND stream = %s AND version > %s
 ORDER BY version
"""  # noqa: S608 (a constant column list, no input)

HORIZON = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
       (SELECT max(position) FROM events)
"""


def row_to_recorded(row: Sequence[object]) -> ev.Recorded:
    """Build a `Recorded` from a row selected with the store's column list."""
    position, tx, guild_id, stream, version, type_name, schema, data, meta, recorded_at = row
    return ev.Recorded(
        position=position,  # type: ignore[arg-type]
        tx=int(tx),  # type: ignore[call-overload]
        guild_id=guild_id,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        version=version,  # type: ignore[arg-type]
        event=ev.decode(data, type_name, schema),  # type: ignore[arg-type]
        meta=ev.decode_meta(meta),  # type: ignore[arg-type]
        recorded_at=recorded_at,  # type: ignore[arg-type]
    )


def translate(exc: Exception) -> Exception:
    """Map a driver error to a `LedgerError` by SQLSTATE (never by message text)."""
    if isinstance(exc, pgerr.UniqueViolation):
        if exc.diag.constraint_name == "commands_pkey":
            return DuplicateCommand()
        return Conflict("Someone else changed this at the same moment; please try again.")
    if isinstance(exc, psycopg.Error) and exc.sqlstate in ("LX409", "40001", "40P01", "55P03"):
        return Conflict("Someone else changed this at the same moment; please try again.")
    if isinstance(exc, pgerr.QueryCanceled | psycopg.OperationalError | PoolTimeout):
        return DatabaseUnavailable("The economy database is not answering; try again shortly.")
    return exc


class EventStore:
    """Appends and reads the log through an open async pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._dirty = asyncio.Event()
        # SQLSTATEs seen (conflicts, deadlocks, timeouts): benchmarks and /metrics read them.
        self.errors: Counter[str] = Counter()
        self.appended_events = 0
        self.appended_commands = 0

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            self.errors[getattr(exc, "sqlstate", None) or type(exc).__name__] += 1
            raise translate(exc) from exc

    async def load(
        self, guild_id: int, command_ids: Sequence[str], streams: Sequence[int]
    ) -> Loaded:
        """Config, the state rows of `streams` and any recorded result, in one round trip."""
        async with self._connection() as conn:
            cur = await conn.execute(
                LOAD,
                {"guild": guild_id, "ids": list(command_ids), "streams": [CONFIG_STREAM, *streams]},
            )
            rows = await cur.fetchall()
        loaded = Loaded(config=DEFAULT_CONFIG, config_version=0, versions={}, states={})
        for kind, command_id, stream, version, text in rows:
            if kind == 0:
                loaded.seen[command_id] = text.encode()
            elif stream == CONFIG_STREAM:
                loaded.config = _config_decoder.decode(text)
                loaded.config_version = version
            else:
                loaded.versions[stream] = version
                loaded.states[stream] = decode_state(text)
        return loaded

    async def append(self, batch: AppendBatch) -> list[int]:
        """Append atomically; raise Conflict, DuplicateCommand or DatabaseUnavailable."""
        async with self._connection() as conn:
            cur = await conn.execute(APPEND, append_params(batch))
            row = await cur.fetchone()
        if batch.ev_types:
            self._dirty.set()
        self.appended_events += len(batch.ev_types)
        self.appended_commands += len(batch.command_ids)
        return list(row[0]) if row else []

    async def command_result(
        self, guild_id: int, command_id: str
    ) -> tuple[bytes, list[int]] | None:
        """The recorded result and event positions of a command, or None if never recorded."""
        async with self._connection() as conn:
            cur = await conn.execute(COMMAND_RESULT, (guild_id, command_id))
            row = await cur.fetchone()
        return (row[0].encode(), list(row[1])) if row else None

    async def read(self, after: Checkpoint, limit: int = 1000) -> list[ev.Recorded]:
        """Up to `limit` committed events after `after`, in delivery order, below the horizon."""
        async with self._connection() as conn:
            cur = await conn.execute(READ_AFTER, (str(after.tx), after.position, limit))
            rows = await cur.fetchall()
        return [row_to_recorded(row) for row in rows]

    async def events_at(self, guild_id: int, positions: Sequence[int]) -> list[ev.Recorded]:
        """The guild's events at `positions`, plus the other half of any transfer among them."""
        ids = list(positions)
        async with self._connection() as conn:
            cur = await conn.execute(READ_POSITIONS, (guild_id, ids, guild_id, ids))
            rows = await cur.fetchall()
        return [row_to_recorded(row) for row in rows]

    async def stream_events(
        self, guild_id: int, stream: int, after_version: int = 0
    ) -> list[ev.Recorded]:
        """One stream's events after `after_version`, oldest first (audits and tests)."""
        async with self._connection() as conn:
            cur = await conn.execute(READ_STREAM, (guild_id, stream, after_version))
            rows = await cur.fetchall()
        return [row_to_recorded(row) for row in rows]

    async def horizon(self) -> tuple[int, int]:
        """(the snapshot horizon's xmin, the highest allocated position)."""
        async with self._connection() as conn:
            cur = await conn.execute(HORIZON)
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1] or 0)

    async def run_notifier(self, min_interval: float = 0.02) -> None:
        """Send a payload-less NOTIFY after appends, at most every `min_interval` seconds.

        Kept out of the append transaction on purpose: PostgreSQL serialises the commits of
        transactions that NOTIFY, which would turn every append into a global queue.
        """
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            started = time.monotonic()
            with contextlib.suppress(Exception):
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
            await asyncio.sleep(max(0.0, min_interval - (time.monotonic() - started)))


def encode_json(value: object) -> str:
    """msgspec JSON as text, for jsonb parameters."""
    return _encoder.encode(value).decode()
