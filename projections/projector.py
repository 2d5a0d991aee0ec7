"""The projector contract and the in-memory overlay every fold writes into.

A projector names the event types it handles and the tables it owns, and folds a batch of
delivered events into an `Overlay`: a pending view of its tables holding the rows the batch
read (loaded by key before folding), the rows it changed, counter deltas and appended rows.
Flushing the overlay writes only the difference, in bulk. The same projector code serves live
processing (one overlay per batch, flushed in the checkpoint's transaction), rebuild (an overlay
kept across chunks and flushed into shadow tables when it grows) and verify (one overlay for the
whole replay, never flushed: its rows are the expected table contents).

Folding reads event data only: no clock, no randomness, no other table.
"""

from __future__ import annotations

import abc
import contextlib
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import msgspec

from ledger import events as ev
from projections.tables import Key, Table, TableIO, Values


class Delivered(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=1):
    """An event as a projector receives it: its place in delivery order, its guild, itself.

    (Array-like and tagged so that a whole batch decodes from one JSON document in one call:
    see `projections.log`.)
    """

    tx: int
    position: int
    guild_id: int
    event: ev.AnyEvent


def type_name(event_class: type[ev.Event]) -> str:
    """The stored `type` of an event class (its msgspec tag)."""
    return str(event_class.__struct_config__.tag)


_MERGES: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "max": max,
    "min": min,
    "set": lambda _a, b: b,
}


class Overlay:
    """A projector's pending changes to its tables, over the rows it has read.

    `live` is True only for live processing: a rebuild or verify replays history, so anything
    with an effect outside the read tables (the gateway's outbox) must check it.
    """

    def __init__(self, tables: Sequence[Table], io: TableIO | None, live: bool) -> None:
        self.tables = {t.name: t for t in tables}
        self.io = io
        self.live = live
        # Before its first flush into an empty shadow table nothing exists there yet, so rows can
        # be COPYed straight in instead of merged.
        self.fresh = False
        # True in a rebuild's member-ordered bulk fold: a projector may leave out a table that
        # it derives in SQL from its complete other tables afterwards (`Projector.derive`).
        self.bulk = False
        self.rows: dict[str, dict[Key, Values | None]] = {}
        self.base: dict[str, dict[Key, Values | None]] = {}
        self.counters: dict[str, dict[Key, list[object]]] = {}
        self.appended: dict[str, list[tuple[object, ...]]] = {}
        # Amounts to add to a state table's rows, written by the projector's own `flush`.
        self.deltas: dict[str, dict[Key, int]] = {}
        # False for a projector that declared it never reads its tables (`reads_tables`).
        self.may_load = True
        self.clear()

    def clear(self) -> None:
        """Forget everything (after a flush, or a rolled-back batch)."""
        for table in self.tables.values():
            self.rows[table.name] = {}
            self.base[table.name] = {}
            self.counters[table.name] = {}
            self.appended[table.name] = []
            self.deltas[table.name] = {}

    def size(self) -> int:
        """Rows held in memory, to bound memory (rebuilds, and live batches held back)."""
        return sum(
            len(self.rows[n])
            + len(self.counters[n])
            + len(self.appended[n])
            + len(self.deltas[n]) // 2  # a key and an int: about half a row's memory
            for n in self.tables
        )

    async def load(self, table: Table, keys: Iterable[Key]) -> None:
        """Read the stored rows at `keys` that are not in the overlay yet (absent -> None)."""
        if not self.may_load:
            raise RuntimeError(f"{table.name}: a projector declared reads_tables=False, then read")
        rows, base = self.rows[table.name], self.base[table.name]
        missing = {k for k in keys if k not in rows}
        if not missing:
            return
        found = await self.io.load(table, missing) if self.io is not None else {}
        for key in missing:
            rows[key] = base[key] = found.get(key)

    def get(self, table: Table, key: Key) -> Values | None:
        """The row at `key` as the fold sees it (it must have been loaded)."""
        return self.rows[table.name].get(key)

    def put(self, table: Table, key: Key, values: Values | None) -> None:
        """Set the row at `key` (None deletes it)."""
        self.rows[table.name][key] = values

    def add(self, table: Table, key: Key, values: Sequence[object]) -> None:
        """Merge counter values into the row at `key` (each column by its merge rule)."""
        pending = self.counters[table.name]
        current = pending.get(key)
        if current is None:
            pending[key] = list(values)
            return
        for i, column in enumerate(table.values):
            current[i] = _MERGES[column.merge](current[i], values[i])

    def add_deltas(self, table: Table, amounts: dict[Key, int]) -> None:
        """Add each amount to the pending delta of its row (for the projector's `flush`)."""
        pending = self.deltas[table.name]
        get = pending.get
        for key, amount in amounts.items():
            pending[key] = get(key, 0) + amount

    def take_deltas(self, table: Table) -> dict[Key, int]:
        """The pending deltas of `table`, removed from the overlay."""
        taken, self.deltas[table.name] = self.deltas[table.name], {}
        return taken

    def append(self, table: Table, row: tuple[object, ...]) -> None:
        """Add a row to an append-only table."""
        self.appended[table.name].append(row)

    def take_finished(self, open_member: tuple[int, int] | None) -> list[tuple[Table, list[Key]]]:
        """Remove and return the rows no later event can change, as full rows per table.

        Used by a member-ordered rebuild into fresh tables: every member but `open_member` (the
        one the next chunk may continue) is finished. Rows that are not one member's stay
        until the end (`open_member` None takes everything).
        """
        taken: list[tuple[Table, list[Key]]] = []
        for table in self.tables.values():
            index = table.member_index
            if table.kind == "append":
                rows = [tuple(r) for r in self.appended[table.name]]
                self.appended[table.name] = []
            elif index is None and open_member is not None:
                continue
            else:
                pending = (
                    self.rows[table.name] if table.kind == "state" else self.counters[table.name]
                )
                kept: dict[Key, Any] = {}
                rows = []
                for key, values in pending.items():
                    if open_member is not None and (key[0], key[index]) == open_member:  # type: ignore[index]
                        kept[key] = values
                    elif values is not None and not (table.drop_zero and not any(values)):
                        rows.append(key + tuple(values))
                if table.kind == "state":
                    self.rows[table.name] = kept
                    self.base[table.name] = dict.fromkeys(kept)
                else:
                    self.counters[table.name] = kept
            if rows:
                taken.append((table, rows))
        return taken

    def expected_rows(self, table: Table) -> dict[Key, Values]:
        """The table's contents after an unflushed replay from nothing (verify)."""
        if table.kind == "state":
            return {k: v for k, v in self.rows[table.name].items() if v is not None}
        if table.kind == "counter":
            return {
                k: tuple(v)
                for k, v in self.counters[table.name].items()
                if not (table.drop_zero and not any(v))
            }
        width = len(table.key)
        return {row[:width]: row[width:] for row in self.appended[table.name]}

    async def flush(self, io: TableIO) -> int:
        """Write the pending changes through `io`; return how many rows were written."""
        written = 0
        for table in self.tables.values():
            if table.kind == "state":
                written += await self._flush_state(io, table)
            elif table.kind == "counter":
                pending = self.counters[table.name]
                rows = [k + tuple(v) for k, v in pending.items()]
                if rows and self.fresh:
                    await io.insert(
                        table, (r for r in rows if not (table.drop_zero and _zero(r, table)))
                    )
                elif rows:
                    await io.upsert(table, rows)
                written += len(rows)
                pending.clear()
            else:
                appended = self.appended[table.name]
                if appended:
                    await io.insert(table, appended)
                written += len(appended)
                appended.clear()
        self.fresh = False
        return written

    async def _flush_state(self, io: TableIO, table: Table) -> int:
        rows, base = self.rows[table.name], self.base[table.name]
        inserts: list[tuple[object, ...]] = []
        updates: list[tuple[object, ...]] = []
        deletes: list[Key] = []
        for key, values in rows.items():
            stored = base.get(key, _UNKNOWN)
            if stored == values:
                continue
            if values is None:
                if stored is not None:
                    deletes.append(key)
            elif stored is None:
                inserts.append(key + values)
            else:  # stored, or never loaded (merge to be safe)
                updates.append(key + values)
            base[key] = values
        await io.delete(table, deletes)
        if inserts:
            await io.insert(table, inserts)
        if updates:
            await io.upsert(table, updates)
        return len(inserts) + len(updates) + len(deletes)


_UNKNOWN: Values = ("\x00unknown",)


def _zero(row: Sequence[object], table: Table) -> bool:
    return not any(row[len(table.key) :])


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is folded (reference counting goes on).

    A fold allocates an object or more per event, and on a backlog most of them live on in the
    held overlay, so the collector's passes over them free nothing; its full passes walk the
    whole overlay again each time it grows by a quarter. Pausing it per fold cut a 1M-event
    catch-up from 6.1-6.5 s to 5.3-5.9 s. Whoever found it enabled enables it again, so folds that
    interleave (lanes) leave it as they found it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Projector(abc.ABC):
    """Folds the event types it handles into the tables it owns."""

    name: ClassVar[str]
    handles: ClassVar[frozenset[type[ev.Event]]]
    tables: ClassVar[tuple[Table, ...]]
    # True when every row depends only on one member stream's events, folded in that stream's
    # order (or is a counter whose merge does not care about order). A rebuild then folds the
    # log member by member, which needs no reads of rows already written. Set it False for a
    # projector whose rows combine several members' streams in delivery order.
    member_local: ClassVar[bool] = True
    # Rough cost of a batch relative to the others, to spread projectors over connections.
    weight: ClassVar[int] = 1
    # False when the live fold never loads a row (`Overlay.load`): it only adds counters and
    # deltas, so its result does not depend on what is stored, and the engine may write a held
    # overlay while the next batches are folded (`projections.engine`). A live overlay of such a
    # projector refuses `load`, so a wrong declaration fails loudly instead of folding stale rows.
    reads_tables: ClassVar[bool] = True

    @classmethod
    def type_names(cls) -> frozenset[str]:
        """The stored type names of the events it handles."""
        return frozenset(type_name(t) for t in cls.handles)

    async def flush(self, state: Overlay, io: TableIO) -> int:
        """Write a live batch's changes (inside the checkpoint's transaction); return rows.

        The overlay's own flush, unless a projector keeps changes the overlay cannot write.
        """
        return await state.flush(io)

    async def derive(self, io: TableIO) -> None:
        """Fill the tables a bulk fold (`Overlay.bulk`) left out, from the others, in SQL.

        Runs once, after every member's rows are in `io`'s tables and before their indexes are
        built. Most projectors leave nothing out.
        """
        return

    async def fold(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """`apply`, with the cyclic collector paused (what the engine, rebuild and verify call)."""
        with collector_paused():
            await self.apply(batch, state)

    @abc.abstractmethod
    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Fold `batch` (handled types only, in delivery order) into `state`.

        Load every state-table row the fold reads with `state.load` first; then fold without
        I/O, from the events' data only.
        """
