"""Verify: replay the log in memory, independently of the workers, and compare with the tables.

Each projector's live tables and checkpoint are read in one REPEATABLE READ snapshot, so they
agree with each other while the workers keep going. The log up to each checkpoint is folded
from nothing into an in-memory overlay (events table only; nothing the workers wrote is read)
and the expected rows are compared with the live ones in key order: a digest of each side and
up to `max_differences` differing rows per table. The digest is SHA-256 over the rows in key
order, each a canonical JSON array (times in UTC), so equal contents give equal digests on any
machine: two rebuilds of the same log must agree byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.store import Checkpoint
from projections import checkpoints
from projections.log import after, read_batch
from projections.projector import Overlay, Projector
from projections.projectors import select
from projections.tables import Key, Table, TableIO, Values

DEFAULT_CHUNK = 50_000
_encoder = msgspec.json.Encoder()


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One row that differs: what the log says (`expected`) and what the table holds."""

    table: str
    key: dict[str, Any]
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None


class TableCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The comparison of one read table with the replayed log."""

    projector: str
    table: str
    checkpoint: tuple[int, int]
    rows: int
    expected_rows: int
    digest: str
    expected_digest: str
    difference_count: int
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        """True when the table holds exactly what the log says."""
        return self.difference_count == 0 and self.digest == self.expected_digest


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every table's check; `ok` when all match. Encode with `msgspec.json` for --json."""

    ok: bool
    tables: list[TableCheck]
    events: int  # log events replayed


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def row_digest_line(key: Key, values: Values) -> bytes:
    """The canonical bytes of one row in a digest."""
    return _encoder.encode([_canonical(v) for v in (*key, *values)]) + b"\n"


def _as_dict(columns: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {c: _canonical(v) for c, v in zip(columns, values, strict=True)}


class _Comparison:
    """Merges the expected rows (sorted) with the live rows (streamed in key order)."""

    def __init__(self, table: Table, expected: dict[Key, Values], limit: int) -> None:
        self.table = table
        self.keys = sorted(expected)
        self.expected = expected
        self.limit = limit
        self.index = 0
        self.rows = 0
        self.count = 0
        self.differences: list[Difference] = []
        self.actual_digest = hashlib.sha256()
        self.expected_digest = hashlib.sha256()
        for key in self.keys:
            self.expected_digest.update(row_digest_line(key, expected[key]))

    def _differ(self, key: Key, expected: Values | None, actual: Values | None) -> None:
        self.count += 1
        if len(self.differences) >= self.limit:
            return
        key_names = [c.name for c in self.table.key]
        value_names = [c.name for c in self.table.values]
        self.differences.append(
            Difference(
                table=self.table.name,
                key=_as_dict(key_names, key),
                expected=None if expected is None else _as_dict(value_names, expected),
                actual=None if actual is None else _as_dict(value_names, actual),
            )
        )

    def _missing_before(self, key: Key | None) -> Iterator[Key]:
        while self.index < len(self.keys) and (key is None or self.keys[self.index] < key):
            yield self.keys[self.index]
            self.index += 1

    def feed(self, key: Key, values: Values) -> None:
        """One live row, in key order."""
        self.rows += 1
        self.actual_digest.update(row_digest_line(key, values))
        for missing in self._missing_before(key):
            self._differ(missing, self.expected[missing], None)
        if self.index < len(self.keys) and self.keys[self.index] == key:
            expected = self.expected[key]
            self.index += 1
            if tuple(expected) != tuple(values):
                self._differ(key, expected, values)
        else:
            self._differ(key, None, values)

    def finish(self, projector: str, point: Checkpoint) -> TableCheck:
        """The check once every live row was fed."""
        for missing in self._missing_before(None):
            self._differ(missing, self.expected[missing], None)
        return TableCheck(
            projector=projector,
            table=self.table.name,
            checkpoint=(point.tx, point.position),
            rows=self.rows,
            expected_rows=len(self.keys),
            digest=self.actual_digest.hexdigest(),
            expected_digest=self.expected_digest.hexdigest(),
            difference_count=self.count,
            differences=self.differences,
        )


async def replay(
    conn: psycopg.AsyncConnection[Any],
    projectors: Sequence[Projector],
    until: dict[str, Checkpoint],
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[dict[str, Overlay], int]:
    """Fold the log from nothing, each projector up to its `until` point, in memory."""
    states = {p.name: Overlay(p.tables, None, live=False) for p in projectors}
    end = max(until.values(), key=lambda c: (c.tx, c.position), default=Checkpoint())
    types = frozenset().union(*(p.type_names() for p in projectors))
    point, read = Checkpoint(), 0
    while after(end, point):
        batch = await read_batch(conn, point, chunk_size, types, until=end)
        if batch.end is None:
            break
        for projector in projectors:
            limit = until[projector.name]
            events = [
                d
                for d in batch.events
                if type(d.event) in projector.handles
                and (d.tx, d.position) <= (limit.tx, limit.position)
            ]
            if events:
                await projector.fold(events, states[projector.name])
        point, read = batch.end, read + batch.read
    return states, read


async def verify(
    pool: AsyncConnectionPool,
    names: Sequence[str] | None = None,
    *,
    max_differences: int = 20,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerifyReport:
    """Compare the live tables of `names` (all when None) with a replay of the log."""
    projectors = select(names)
    async with pool.connection() as snap, pool.connection() as reader, snap.transaction():
        await snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # The snapshot stays open while the log is replayed on the other connection, and its
        # cursors' first fetches may scan a whole big table: neither limit of the pool applies.
        await snap.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        await snap.execute("SET LOCAL statement_timeout = 0")
        stored = await checkpoints.load(snap, [p.name for p in projectors])
        until = {p.name: stored.get(p.name, Checkpoint()) for p in projectors}
        states, events = await replay(reader, projectors, until, chunk_size)
        checks = [
            await _check_table(snap, table, states[p.name], until[p.name], p.name, max_differences)
            for p in projectors
            for table in p.tables
        ]
    return VerifyReport(ok=all(c.ok for c in checks), tables=checks, events=events)


async def _check_table(
    snap: psycopg.AsyncConnection[Any],
    table: Table,
    state: Overlay,
    point: Checkpoint,
    projector: str,
    max_differences: int,
) -> TableCheck:
    """Stream the live table (in the snapshot) against the replayed rows."""
    comparison = _Comparison(table, state.expected_rows(table), max_differences)
    width = len(table.key)
    cur = snap.cursor(name=f"verify_{table.name}")
    await cur.execute(TableIO(snap, schema=None).select_all(table))
    async for row in cur:
        comparison.feed(tuple(row[:width]), tuple(row[width:]))
    await cur.close()
    return comparison.finish(projector, point)
