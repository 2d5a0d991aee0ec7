"""Read-table descriptions and the bulk SQL that loads and writes them.

A `Table` mirrors a `CREATE TABLE` in `sql/01x_*.sql` (a test checks they agree). `TableIO`
performs the few statements a projector batch needs against one schema (the live tables or a
rebuild's shadow copies): load rows by key, upsert or merge staged rows, delete by key. Rows are
staged with binary COPY into session temp tables, then merged with one statement per table, so
a batch costs a handful of round trips whatever its size. Identifiers only ever come from these
constant specs and go through `psycopg.sql.Identifier`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import psycopg
from psycopg import sql

Merge = Literal["set", "add", "max", "min"]
Kind = Literal["state", "counter", "append"]
Key = tuple[Any, ...]
Values = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    """A column: its name, its binary COPY type, and how a counter table merges it."""

    name: str
    pg_type: str  # int8 | int4 | text | timestamptz
    merge: Merge = "add"


@dataclass(frozen=True)
class Table:
    """A read table.

    `state` tables hold rows the fold reads back (loaded by key, replaced, deleted when gone);
    `counter` tables are merged without reading (each value column added, or max/min);
    `append` tables only receive new rows (keys never repeat).
    """

    name: str
    key: tuple[Column, ...]
    values: tuple[Column, ...]
    kind: Kind
    drop_zero: bool = False  # counter rows whose values all come back to 0 are deleted
    # Where the member id sits in the key (the guild id is always first), or None when a row
    # is not one member's (a histogram count, a log line): rebuilds write a member's rows out
    # as soon as they have folded all of its events.
    member_index: int | None = 1

    @property
    def columns(self) -> tuple[Column, ...]:
        """Key columns, then value columns (the table's column order)."""
        return self.key + self.values

    @property
    def stage(self) -> str:
        """The session temp table its rows are staged in."""
        return f"{self.name}_stage"


def cols(*names: str, pg_type: str = "int8", merge: Merge = "add") -> tuple[Column, ...]:
    """Several columns of one type."""
    return tuple(Column(name, pg_type, merge) for name in names)


def _names(columns: Iterable[Column]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)


def _key_match(table: Table, left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, c.name), sql.Identifier(right, c.name))
        for c in table.key
    )


def order_by_key(table: Table) -> sql.Composable:
    """ORDER BY the key, text compared bytewise so the order matches Python's."""
    return sql.SQL(", ").join(
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c.name))
        if c.pg_type == "text"
        else sql.Identifier(c.name)
        for c in table.key
    )


_json = msgspec.json.Encoder()


def _encode_keys(keys: Collection[Key]) -> str:
    # Keys travel as one JSON parameter: msgspec encodes it in C, where psycopg would build
    # typed arrays element by element in Python.
    return _json.encode(list(keys)).decode()


def _keys_relation(table: Table) -> sql.Composable:
    """A relation of the keys passed as a JSON array of arrays (one placeholder)."""
    return sql.SQL("SELECT {} FROM json_array_elements({}::json) AS j(k)").format(
        sql.SQL(", ").join(
            sql.SQL("(j.k->>{})::{} AS {}").format(
                sql.Literal(i), sql.SQL(c.pg_type), sql.Identifier(c.name)
            )
            for i, c in enumerate(table.key)
        ),
        sql.Placeholder(),
    )


def _merge_expr(table: Table, column: Column) -> sql.Composable:
    current = sql.Identifier(table.name, column.name)
    incoming = sql.Identifier("excluded", column.name)
    if table.kind != "counter" or column.merge == "set":
        return incoming
    if column.merge == "add":
        return sql.SQL("{} + {}").format(current, incoming)
    function = sql.SQL("greatest" if column.merge == "max" else "least")
    return sql.SQL("{}({}, {})").format(function, current, incoming)


class TableIO:
    """Bulk statements for tables in one schema, on one connection (inside its transaction).

    `schema` None means the live tables, found through the search path.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any], schema: str | None) -> None:
        self.conn = conn
        self.schema = schema
        self._staged: set[str] = set()

    def ident(self, table: Table) -> sql.Identifier:
        """The table's name, qualified with the schema when one is set."""
        if self.schema is None:
            return sql.Identifier(table.name)
        return sql.Identifier(self.schema, table.name)

    async def _ensure_stage(self, table: Table) -> None:
        # Session temp tables, created once per connection: creating one per batch would churn
        # the catalog. ON COMMIT DELETE ROWS empties them at the end of every batch.
        if table.stage in self._staged:
            return
        await self.conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(sql.Identifier(table.stage), self.ident(table))
        )
        self._staged.add(table.stage)

    def forget_stages(self) -> None:
        """After a rollback: stages created in that transaction are gone."""
        self._staged.clear()

    async def _copy(
        self, target: sql.Composable, columns: Sequence[Column], rows: Iterable[Sequence[Any]]
    ) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            target, _names(columns)
        )
        async with self.conn.cursor().copy(statement) as copy:
            copy.set_types([c.pg_type for c in columns])
            for row in rows:
                await copy.write_row(row)

    async def stage(self, table: Table, rows: Iterable[Sequence[Any]]) -> sql.Identifier:
        """COPY rows into the table's session stage (empty it when done); return its name."""
        await self._ensure_stage(table)
        await self._copy(sql.Identifier(table.stage), table.columns, rows)
        return sql.Identifier(table.stage)

    async def load(self, table: Table, keys: Collection[Key]) -> dict[Key, Values]:
        """The rows at `keys` that exist, as key -> values."""
        if not keys:
            return {}
        query = sql.SQL("SELECT {} FROM {} t JOIN ({}) k USING ({})").format(
            sql.SQL(", ").join(sql.Identifier("t", c.name) for c in table.columns),
            self.ident(table),
            _keys_relation(table),
            _names(table.key),
        )
        cur = await self.conn.execute(query, (_encode_keys(keys),))
        width = len(table.key)
        return {tuple(row[:width]): tuple(row[width:]) for row in await cur.fetchall()}

    async def insert(self, table: Table, rows: Iterable[Sequence[Any]]) -> None:
        """COPY rows straight in (keys known to be new: append tables, fresh shadows)."""
        await self._copy(self.ident(table), table.columns, rows)

    async def upsert(self, table: Table, rows: Iterable[Sequence[Any]]) -> None:
        """Insert rows, or merge them into existing rows with the same key."""
        await self._ensure_stage(table)
        await self._copy(sql.Identifier(table.stage), table.columns, rows)
        target = self.ident(table)
        statement = sql.SQL(
            "INSERT INTO {target} AS {alias} ({columns}) SELECT {columns} FROM {stage} "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}"
        ).format(
            target=target,
            alias=sql.Identifier(table.name),
            columns=_names(table.columns),
            stage=sql.Identifier(table.stage),
            key=_names(table.key),
            updates=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c.name), _merge_expr(table, c))
                for c in table.values
            ),
        )
        await self.conn.execute(statement)
        if table.drop_zero:
            zero = sql.SQL(" AND ").join(
                sql.SQL("{} = 0").format(sql.Identifier("t", c.name)) for c in table.values
            )
            await self.conn.execute(
                sql.SQL("DELETE FROM {} t USING {} s WHERE {} AND {}").format(
                    target, sql.Identifier(table.stage), _key_match(table, "t", "s"), zero
                )
            )
        # The next use in this transaction must start empty. (DELETE, not TRUNCATE: truncating a
        # table not created in this transaction gives it a new file and a catalog update.)
        await self.conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table.stage)))

    async def delete(self, table: Table, keys: Collection[Key]) -> None:
        """Delete the rows at `keys`."""
        if not keys:
            return
        statement = sql.SQL("DELETE FROM {} t USING ({}) k WHERE {}").format(
            self.ident(table), _keys_relation(table), _key_match(table, "t", "k")
        )
        await self.conn.execute(statement, (_encode_keys(keys),))

    def select_all(self, table: Table) -> sql.Composed:
        """Every row of the table in key order (verify, digests)."""
        return sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            _names(table.columns), self.ident(table), order_by_key(table)
        )
