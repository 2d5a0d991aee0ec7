"""Projection workers: claim projectors through leases, wake on NOTIFY, poll as the safety net.

Any number of worker processes (or `run_workers` tasks) may run. Each claims the projectors no
one else holds, through a session advisory lock taken on its own connection; the batches run on
that same connection, so a worker that loses its connection loses its leases and cannot apply
anything more. PostgreSQL drops a dead worker's locks with its session, and the others try to
claim unheld projectors every few seconds. Correctness never rests on the lease: every batch
moves the checkpoint with a compare-and-set (see `projections.checkpoints`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ledger.store import NOTIFY_CHANNEL, Checkpoint
from projections import checkpoints
from projections.engine import DEFAULT_BATCH_SIZE, MAX_HELD_EVENTS, Engine
from projections.log import after, last_committed
from projections.projector import Projector
from projections.projectors import select
from projections.status import oldest_transaction

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 1.0
CLAIM_INTERVAL = 5.0
MAX_RECONNECT_DELAY = 30.0
DEFAULT_MAX_WAIT = 300.0  # how long catch_up waits for other workers and open transactions


class Worker:
    """One connection, the leases it holds, and the engine that runs the leased projectors."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        projectors: Sequence[Projector],
        batch_size: int = DEFAULT_BATCH_SIZE,
        raise_errors: bool = False,
        reader: psycopg.AsyncConnection[Any] | None = None,
        lanes: Sequence[psycopg.AsyncConnection[Any]] = (),
        max_held_events: int = MAX_HELD_EVENTS,
        writer: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        self.conn = conn
        self.lanes = [*lanes, *([writer] if writer is not None else [])]  # staging tables
        self.wanted = list(projectors)
        self.engine = Engine(
            conn,
            batch_size,
            raise_errors,
            reader,
            lanes,
            max_held_events=max_held_events,
            writer=writer,
        )
        self.held: set[str] = set()

    async def claim(self) -> list[str]:
        """Take the lease of every wanted projector no one holds; return those newly taken."""
        taken = []
        for projector in self.wanted:
            if projector.name in self.held:
                continue
            if await checkpoints.try_lock(self.conn, checkpoints.LEASE_CLASS, projector.name):
                self.held.add(projector.name)
                await self.engine.add([projector])
                taken.append(projector.name)
                log.info(
                    "worker %s claimed projector %s", self.conn.info.backend_pid, projector.name
                )
        return taken

    async def release(self) -> None:
        """Give the leases and session state back before the connection returns to the pool."""
        await self.engine.close()
        try:
            await self.conn.execute("UNLISTEN *")
            await self.conn.execute("SELECT pg_advisory_unlock_all()")
            await self.conn.execute("DISCARD TEMP")
        except psycopg.Error:
            # A connection we cannot clean must not carry our leases back into the pool.
            await self.conn.close()
        for lane in self.lanes:
            try:
                await lane.execute("DISCARD TEMP")  # its staging tables
            except psycopg.Error:
                await lane.close()
        self.held.clear()

    async def run(self, stop: asyncio.Event, poll_interval: float) -> None:
        """Process until `stop` is set: batches while there is work, else wait for a hint."""
        await self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        next_claim = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_claim and len(self.held) < len(self.wanted):
                await self.claim()
                next_claim = now + CLAIM_INTERVAL
            read = await self.engine.step()
            if read == 0:
                await self._wait(stop, poll_interval)
        await self.engine.write_held()  # a backlog's folded batches, before the leases go

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Until a NOTIFY hint (one that came during the last batch counts), `seconds`, or stop."""
        listener = asyncio.ensure_future(self._notified(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({listener, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listener, stopper):
                task.cancel()
            await asyncio.gather(listener, stopper, return_exceptions=True)

    async def _notified(self, seconds: float) -> None:
        notifies = self.conn.notifies(timeout=seconds, stop_after=1)
        async with contextlib.aclosing(notifies):
            async for _ in notifies:
                break


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_workers(
    pool: AsyncConnectionPool,
    *,
    names: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    max_held_events: int = MAX_HELD_EVENTS,
) -> None:
    """Run one projection worker until `stop` is set (forever when None).

    It claims the leases of `names` (every projector when None) that no other worker holds,
    applies new events in batches of up to `batch_size`, sleeps until a NOTIFY on
    `ledger_events` or `poll_interval` seconds, and retries claims every few seconds so it takes
    over from workers that died. On a backlog it folds up to `max_held_events` events before
    writing them (see `projections.engine`). Losing the database connection is survived: it
    reconnects with backoff and claims again. A projector that fails on a batch backs off
    alone. Run several calls (tasks or processes) for more workers; each holds four pooled
    connections (leases; reads ahead; a second lane applies projectors concurrently; a writer
    writes a backlog's counters and deltas while the next batches fold).
    """
    projectors = select(names)
    stop = stop or asyncio.Event()
    failures = 0
    while not stop.is_set():
        try:
            async with (
                pool.connection() as conn,
                pool.connection() as reader,
                pool.connection() as lane,
                pool.connection() as writer,
            ):
                worker = Worker(
                    conn, projectors, batch_size, reader=reader, lanes=[lane],
                    max_held_events=max_held_events, writer=writer,
                )  # fmt: skip
                try:
                    await worker.run(stop, poll_interval)
                finally:
                    await worker.release()
            return
        except (psycopg.OperationalError, PoolTimeout) as exc:
            reason = f"lost the database ({exc.__class__.__name__})"
        except Exception:
            log.exception("projection worker failed")
            reason = "failed"
        failures += 1
        delay = random.uniform(0.5, 1.0) * min(MAX_RECONNECT_DELAY, 0.25 * 2**failures)
        log.warning("projection worker %s; retrying in %.1fs", reason, delay)
        await _sleep_unless(stop, delay)


async def catch_up(
    pool: AsyncConnectionPool,
    names: Sequence[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_wait: float = DEFAULT_MAX_WAIT,
    max_held_events: int = MAX_HELD_EVENTS,
) -> int:
    """Apply every event committed before the call to `names` (all when None); return how many.

    Events committed after the call may be applied too. An event past the snapshot horizon (an
    older transaction is still open: a command being written, another worker's batch) is waited
    for, as are projectors whose lease another worker holds (this waits until that worker has
    passed the same point). After `max_wait` seconds: TimeoutError, naming the transaction that
    holds the horizon back if one does. Errors propagate. The count is of log events read and
    applied by this call.
    """
    projectors = select(names)
    async with (
        pool.connection() as conn,
        pool.connection() as reader,
        pool.connection() as lane,
        pool.connection() as writer,
    ):
        worker = Worker(
            conn, projectors, batch_size, raise_errors=True, reader=reader, lanes=[lane],
            max_held_events=max_held_events, writer=writer,
        )  # fmt: skip
        try:
            target = await last_committed(conn)
            await worker.claim()
            if target is None:
                return 0
            return await _catch_up_to(worker, target, time.monotonic() + max_wait)
        finally:
            await worker.release()


async def _catch_up_to(worker: Worker, target: Checkpoint, deadline: float) -> int:
    applied = 0
    engine = worker.engine
    while True:
        if any(after(target, r.checkpoint) for r in engine.running.values()):
            read = await engine.step()
            applied += read
            if not read:  # the target is committed, but an older transaction is still open
                await _wait_or_give_up(worker.conn, deadline, "the projectors")
            continue
        others = [p.name for p in worker.wanted if p.name not in worker.held]
        if not others:
            return applied
        stored = await checkpoints.load(worker.conn, others)
        if not any(after(target, stored[name]) for name in others):
            return applied
        if not await worker.claim():  # their holder may have died meanwhile
            await _wait_or_give_up(worker.conn, deadline, f"projectors {', '.join(others)}")


async def _wait_or_give_up(
    conn: psycopg.AsyncConnection[Any], deadline: float, waiting: str
) -> None:
    """Poll again shortly, or raise TimeoutError past `deadline` (naming what holds us back)."""
    if time.monotonic() <= deadline:
        await asyncio.sleep(0.02)
        return
    message = f"{waiting} did not catch up in time"
    holder = await oldest_transaction(conn)
    if holder is not None:
        message += (
            f"; the horizon is held back by transaction {holder.xid} (pid {holder.pid}, "
            f"{holder.state}, open {holder.age_seconds:.0f}s)"
        )
    raise TimeoutError(message)
