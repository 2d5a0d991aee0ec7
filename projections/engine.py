"""Applying batches of the log to projectors, exactly once.

One read of the log feeds every projector the engine runs: the batch starts at the lowest of
their checkpoints and each projector takes only the events after its own. Each projector's
share is applied in its own transaction, which first moves the checkpoint with a
compare-and-set and then writes the table changes; so a batch is either wholly applied with its
checkpoint or not at all, whoever else is running.

With extra connections (`lanes`), the projectors are spread over them by `Projector.weight`
and the lanes apply a batch concurrently: the server writes one projector's rows while Python
folds another's (on a 1M-event backlog the leaderboards alone cost as much as the other five).
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
# While a backlog keeps batches full, each next batch is twice as big, up to this. A batch costs
# mostly the read-table rows it touches, and a busy guild's members recur all through a deep
# backlog: 500k message grants from 20,000 members caught up at 24k events/s in 50k-event
# batches and at 64k/s in 200k-event ones (peak RSS then about 450 MB). Back to the base size as
# soon as a batch comes back short (caught up).
MAX_BATCH_SIZE = 200_000
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Running:
    """A projector the engine runs: where it is, and whether it is backing off after an error."""

    projector: Projector
    checkpoint: Checkpoint
    failures: int = 0
    retry_at: float = 0.0


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
    ) -> None:
        self.conn = conn
        self.base_batch_size = self.batch_size = batch_size
        self.max_batch_size = max(batch_size, max_batch_size)
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
        """Stop running a projector."""
        self.running.pop(name, None)

    async def reload(self, name: str, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        """Re-read a projector's checkpoint (after it moved under us)."""
        stored = await checkpoints.load(conn or self.conn, [name])
        self.running[name].checkpoint = stored[name]

    def _active(self) -> list[Running]:
        now = time.monotonic()
        return [r for r in self.running.values() if r.retry_at <= now]

    async def step(self) -> int:
        """Read one batch from the lowest checkpoint and apply it; return the events read."""
        active = self._active()
        if not active:
            return 0
        start = min((r.checkpoint for r in active), key=lambda c: (c.tx, c.position))
        types = frozenset().union(*(r.projector.type_names() for r in active))
        batch = await self._read(start, types)
        if batch.end is None:
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
                await self._apply(running, batch, self.io)
            return batch.read
        outcomes = await asyncio.gather(
            *(self._apply_each(group, batch, io) for io, group in groups),
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

    async def _apply_each(self, group: list[Running], batch: Batch, io: TableIO) -> None:
        for running in group:
            await self._apply(running, batch, io)

    async def _read(self, start: Checkpoint, types: frozenset[str]) -> Batch:
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            # Awaited even when unusable: cancelling a query midway would spoil the connection.
            batch = await prefetch[2]
            if prefetch[0] == start and prefetch[1] >= types:
                return batch
        return await read_batch(self.conn, start, self.batch_size, types)

    async def close(self) -> None:
        """Finish any read in flight (before the connections go back to the pool)."""
        if self._prefetch is not None:
            task = self._prefetch[2]
            self._prefetch = None
            with contextlib.suppress(Exception):
                await task

    async def _apply(self, running: Running, batch: Batch, io: TableIO) -> None:
        assert batch.end is not None
        start = running.checkpoint
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
        try:
            if events:
                state = Overlay(projector.tables, io, live=True)
                async with io.conn.transaction():
                    # First: the compare-and-set, which also locks the checkpoint row, so a
                    # rebuild's swap and this batch never interleave.
                    await checkpoints.advance(
                        io.conn, projector.name, start, batch.end, len(events)
                    )
                    await projector.apply(events, state)
                    await state.flush(io)
            else:
                await checkpoints.advance(io.conn, projector.name, start, batch.end, 0)
        except checkpoints.CheckpointMoved:
            io.forget_stages()
            log.info("projector %s: checkpoint moved under the batch; reloading", projector.name)
            await self.reload(projector.name, io.conn)
            return
        except Exception:
            io.forget_stages()
            if self.raise_errors or io.conn.broken or io.conn.closed:
                raise
            running.failures += 1
            delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**running.failures)
            running.retry_at = time.monotonic() + delay
            log.exception(
                "projector %s failed on a batch after %s; retrying in %.1fs",
                projector.name,
                start,
                delay,
            )
            return
        running.checkpoint = batch.end
        running.failures = 0
