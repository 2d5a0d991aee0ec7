"""Applying batches of the log to projectors, exactly once.

One read of the log feeds every projector the engine runs: the batch starts at the lowest of
their checkpoints and each projector takes only the events after its own. Each projector's
share is applied in its own transaction, which first moves the checkpoint with a
compare-and-set and then writes the table changes; so a batch is either wholly applied with its
checkpoint or not at all, whoever else is running.

With extra connections (`lanes`), the projectors are spread over them by `Projector.weight`
and the lanes apply a batch concurrently: the server writes one projector's rows while Python
folds another's (on a 1M-event backlog the leaderboards alone cost as much as the other five).

On a backlog, a batch's changes are held back and the next batches fold into the same overlay,
up to `max_held_events` events or `MAX_HELD_ROWS` pending rows; then all of it is written with
one checkpoint move. A busy guild's members recur all through a backlog, so this writes each
touched row once per flush instead of once per batch: the rows written, not the events read,
set the rate of a catch-up. Nothing held is written without its checkpoint (a failure or a
moved checkpoint drops it, to be folded again), so exactly-once is unchanged. The rows a held
overlay has read stay right because only the lease holder writes a projector's tables, and a
rebuild's swap in between fails the checkpoint's compare-and-set.

When a held overlay reaches its bound in the middle of a backlog, the step would wait for its
write with every lane idle. With a `writer` connection, a projector whose live fold never reads
its tables (`Projector.reads_tables` False: counters and deltas only) hands that overlay to a
task writing it, with its checkpoint move, on the writer, and goes on folding the next batches
into a fresh overlay: the server inserts one stretch's rows while Python folds the next (a
sparse backlog of new members, which writes about a row per event: 91k -> 110k events/s). Only
a write the bound forces is handed over, so no row is written more often than before. The next
write of that projector first waits for the one in flight, so checkpoint moves stay in order;
if it failed, what was folded after it is dropped as well and the checkpoint reloaded, exactly
as for a failed write. The fresh overlay needs no row of the one being written, since such a
fold reads nothing (its overlay refuses `load`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.store import Checkpoint
from projections import checkpoints
from projections.log import Batch, after, read_batch
from projections.projector import Overlay, Projector
from projections.tables import TableIO

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 50_000
# While a backlog keeps batches full, each next batch is twice as big, up to this: fewer reads
# and checkpoint moves. Back to the base size as soon as a batch comes back short (caught up).
MAX_BATCH_SIZE = 100_000
# How much a projector may fold before writing, while batches come back full.
MAX_HELD_EVENTS = 2_000_000
MAX_HELD_ROWS = 250_000
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Running:
    """A projector the engine runs: where it is, and whether it is backing off after an error."""

    projector: Projector
    checkpoint: Checkpoint  # as stored: what is written
    failures: int = 0
    retry_at: float = 0.0
    held: Overlay | None = None  # folded after `checkpoint`, not written yet
    held_to: Checkpoint | None = None  # the last event folded into `held`
    held_events: int = 0
    writing: asyncio.Task[None] | None = None  # a held overlay being written behind
    writing_to: Checkpoint | None = None  # where that write moves the checkpoint

    @property
    def folded(self) -> Checkpoint:
        """Where the next batch starts for this projector."""
        if self.held_to is not None:
            return self.held_to
        return self.writing_to if self.writing_to is not None else self.checkpoint

    def drop_held(self) -> None:
        """Forget what was folded and not written (it will be read and folded again)."""
        self.held, self.held_to, self.held_events = None, None, 0


class Engine:
    """Runs a set of projectors over the log on one connection (live tables)."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        raise_errors: bool = False,
        reader: psycopg.AsyncConnection[Any] | None = None,
        lanes: Sequence[psycopg.AsyncConnection[Any]] = (),
        max_batch_size: int = MAX_BATCH_SIZE,
        max_held_events: int = MAX_HELD_EVENTS,
        writer: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        self.conn = conn
        self.base_batch_size = self.batch_size = batch_size
        self.max_batch_size = max(batch_size, max_batch_size)
        self.max_held_events = max_held_events
        # Write-behind (see the module's docstring); its writes take turns on the one connection.
        self.writer = TableIO(writer, schema=None) if writer is not None else None
        self._writer_turn = asyncio.Lock()
        self.raise_errors = raise_errors
        self.io = TableIO(conn, schema=None)
        self.lanes = [self.io, *(TableIO(lane, schema=None) for lane in lanes)]
        self.running: dict[str, Running] = {}
        # With a second connection, the next batch is read while this one is applied: the
        # server reads while Python folds.
        self.reader = reader
        self._prefetch: tuple[Checkpoint, frozenset[str], asyncio.Task[Batch]] | None = None

    async def add(self, projectors: Sequence[Projector]) -> None:
        """Start running `projectors` from their stored checkpoints."""
        names = [p.name for p in projectors]
        await checkpoints.ensure(self.conn, names)
        stored = await checkpoints.load(self.conn, names)
        for projector in projectors:
            self.running[projector.name] = Running(projector, stored[projector.name])

    def remove(self, name: str) -> None:
        """Stop running a projector (dropping what it holds unwritten)."""
        self.running.pop(name, None)

    async def reload(self, name: str, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Re-read a projector's checkpoint (after it moved under us)."""
        stored = await checkpoints.load(conn or self.conn, [name])
        self.running[name].drop_held()
        self.running[name].checkpoint = stored[name]

    def _active(self) -> list[Running]:
        now = time.monotonic()
        return [r for r in self.running.values() if r.retry_at <= now]

    async def step(self) -> int:
        """Read one batch from the lowest checkpoint and apply it; return the events read."""
        active = self._active()
        if not active:
            return 0
        start = min((r.folded for r in active), key=lambda c: (c.tx, c.position))
        types = frozenset().union(*(r.projector.type_names() for r in active))
        batch = await self._read(start, types)
        if batch.end is None:
            await self.write_held()  # the backlog ended exactly at a full batch
            return 0
        full = batch.read == self.batch_size
        self.batch_size = (
            min(2 * self.batch_size, self.max_batch_size) if full else self.base_batch_size
        )
        if self.reader is not None and full:
            task = asyncio.ensure_future(read_batch(self.reader, batch.end, self.batch_size, types))
            self._prefetch = (batch.end, types, task)
        groups = self._spread(active)
        if len(groups) == 1:
            for running in active:
                await self._apply(running, batch, self.io, hold=full)
            return batch.read
        outcomes = await asyncio.gather(
            *(self._apply_each(group, batch, io, full) for io, group in groups),
            return_exceptions=True,  # every lane finishes before its connection is reused
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return batch.read

    def _spread(self, active: list[Running]) -> list[tuple[TableIO, list[Running]]]:
        """The projectors per lane, heaviest first onto the least loaded lane (in order)."""
        loads = [0] * len(self.lanes)
        groups: list[list[Running]] = [[] for _ in self.lanes]
        for running in sorted(active, key=lambda r: -r.projector.weight):
            lane = loads.index(min(loads))
            loads[lane] += running.projector.weight
            groups[lane].append(running)
        order = {name: i for i, name in enumerate(self.running)}
        return [
            (io, sorted(group, key=lambda r: order[r.projector.name]))
            for io, group in zip(self.lanes, groups, strict=True)
            if group
        ]

    async def _apply_each(
        self, group: list[Running], batch: Batch, io: TableIO, hold: bool
    ) -> None:
        for running in group:
            await self._apply(running, batch, io, hold)

    async def _read(self, start: Checkpoint, types: frozenset[str]) -> Batch:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            # Awaited even when unusable: cancelling a query midway would spoil the connection.
            batch = await prefetch[2]
            if prefetch[0] == start and prefetch[1] >= types:
                return batch
        return await read_batch(self.conn, start, self.batch_size, types)

    async def close(self) -> None:
        """Finish any read or write in flight (before the connections go back to the pool).

        A write still in flight here belongs to a run that is ending on an error: its outcome
        changes nothing that the stored checkpoints do not already say.
        """
        if self._prefetch is not None:
            task = self._prefetch[2]
            self._prefetch = None
            with contextlib.suppress(Exception):
                await task
        for running in self.running.values():
            if running.writing is not None:
                with contextlib.suppress(Exception):
                    await running.writing
                running.writing = running.writing_to = None

    async def _apply(self, running: Running, batch: Batch, io: TableIO, hold: bool) -> None:
        """Fold the batch's events after the projector's point into its held overlay; write it
        with the checkpoint move, unless `hold` (a backlog) and it is still within bounds."""
        assert batch.end is not None
        start = running.folded
        if not after(batch.end, start):
            return
        projector = running.projector
        events = batch.handled_by(projector.handles)
        if events and (events[0].tx, events[0].position) <= (start.tx, start.position):
            # This projector was ahead of the batch's start: skip what it has applied.
            skip = 0
            while skip < len(events) and (events[skip].tx, events[skip].position) <= (
                start.tx,
                start.position,
            ):
                skip += 1
            events = events[skip:]
        state = running.held
        if state is None:
            state = Overlay(projector.tables, io, live=True)
            state.may_load = projector.reads_tables
        state.io = io
        try:
            if events:
                await projector.fold(events, state)
        except Exception as error:
            running.drop_held()
            self._failed(running, io, error)
            return
        running.held, running.held_to = state, batch.end
        running.held_events += len(events)
        if hold and running.held_events < self.max_held_events and state.size() < MAX_HELD_ROWS:
            return
        if hold and await self._write_behind(running):
            return
        await self._write(running, io)

    async def _write_behind(self, running: Running) -> bool:
        """Hand the held overlay to a task writing it on the writer, if the projector's fold
        reads nothing (after its write in flight, if any, has finished); False: `_write` it."""
        if self.writer is None or running.projector.reads_tables:
            return False
        if not await self._settle(running):
            return True  # that write failed: what was held is dropped, to be folded again
        state, end, events = running.held, running.held_to, running.held_events
        assert state is not None and end is not None
        running.drop_held()
        running.writing_to = end
        running.writing = asyncio.ensure_future(
            self._write_on_writer(running.projector, state, running.checkpoint, end, events)
        )
        return True

    async def _write_on_writer(
        self, projector: Projector, state: Overlay, start: Checkpoint, end: Checkpoint, events: int
    ) -> None:
        """A write-behind: `_commit` on the writer, in turn (its outcome is taken by `_settle`)."""
        assert self.writer is not None
        async with self._writer_turn:
            await self._commit(self.writer, projector, state, start, end, events)

    async def _settle(self, running: Running) -> bool:
        """Wait for the projector's write in flight, if any; False when it failed (what was
        folded after it is then dropped, as after any failed write)."""
        task, end = running.writing, running.writing_to
        if task is None or end is None:
            return True
        running.writing = running.writing_to = None
        assert self.writer is not None
        try:
            await task
        except Exception as error:
            await self._write_failed(running, self.writer, error)
            return False
        running.checkpoint = end
        running.failures = 0
        return True

    async def write_held(self) -> None:
        """Write whatever the projectors hold back (when a backlog ends, or before stopping)."""
        for running in list(self.running.values()):
            if running.held is not None:
                await self._write(running, self.io)
            else:
                await self._settle(running)

    async def _write(self, running: Running, io: TableIO) -> None:
        """Write the held overlay and move the checkpoint to its end, in one transaction."""
        if not await self._settle(running):
            return
        projector, state, end = running.projector, running.held, running.held_to
        assert state is not None and end is not None
        try:
            await self._commit(io, projector, state, running.checkpoint, end, running.held_events)
        except Exception as error:
            await self._write_failed(running, io, error)
            return
        running.checkpoint = end
        running.drop_held()
        running.failures = 0

    @staticmethod
    async def _commit(
        io: TableIO,
        projector: Projector,
        state: Overlay,
        start: Checkpoint,
        end: Checkpoint,
        events: int,
    ) -> None:
        """Move the checkpoint from `start` to `end` and write `state`, in one transaction."""
        async with io.conn.transaction():
            # First: the compare-and-set, which also locks the checkpoint row, so a rebuild's
            # swap and this write never interleave.
            await checkpoints.advance(io.conn, projector.name, start, end, events)
            if events:
                await projector.flush(state, io)

    async def _write_failed(self, running: Running, io: TableIO, error: Exception) -> None:
        """After a failed write: reload a checkpoint that moved under it; else back off. Either
        way what was held is dropped, to be folded again."""
        if isinstance(error, checkpoints.CheckpointMoved):
            io.forget_stages()
            log.info(
                "projector %s: checkpoint moved under a write; reloading", running.projector.name
            )
            await self.reload(running.projector.name, io.conn)
            return
        running.drop_held()
        self._failed(running, io, error)

    def _failed(self, running: Running, io: TableIO, error: Exception) -> None:
        """Back the projector off after an error (or raise it, when asked to)."""
        io.forget_stages()
        if self.raise_errors or io.conn.broken or io.conn.closed:
            raise error
        running.failures += 1
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**running.failures)
        running.retry_at = time.monotonic() + delay
        log.error(
            "projector %s failed on a batch after %s; retrying in %.1fs",
            running.projector.name,
            running.checkpoint,
            delay,
            exc_info=error,
        )
