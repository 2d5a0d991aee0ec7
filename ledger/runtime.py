"""Wiring for entry points: open a pool, migrate, and hand out the store and services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.database import make_pool
from ledger.ingest import BatchIngestor, CommandBatcher, run_spool_replayer
from ledger.migrations import migrate
from ledger.service import Ledger
from ledger.spool import Spool
from ledger.store import EventStore


@dataclass
class Services:
    """The write side, ready to use: pool, store, command service, XP batcher."""

    pool: AsyncConnectionPool
    store: EventStore
    ledger: Ledger
    ingestor: BatchIngestor
    batcher: CommandBatcher
    spool: Spool | None = None


@contextlib.asynccontextmanager
async def open_services(
    url: str,
    max_connections: int = 20,
    spool_dir: Path | None = None,
    app_url: str | None = None,
) -> AsyncIterator[Services]:
    """Apply migrations on `url` (the schema owner), then open the services' pool on
    `app_url` (the least-privileged application role) or, without one, on `url`; run the
    NOTIFY hinter and the batcher.

    With `spool_dir`, XP grants that meet a database outage are spooled there and replayed
    when it is back. On exit the batcher drains what is queued before the pool closes.
    """
    owner = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with owner:
        await migrate(owner)
    async with make_pool(app_url or url, min_size=2, max_size=max_connections) as pool:
        store = EventStore(pool)
        ingestor = BatchIngestor(store)
        spool = Spool(spool_dir) if spool_dir else None
        batcher = CommandBatcher(ingestor, spool=spool)
        services = Services(pool, store, Ledger(store), ingestor, batcher, spool)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(store.run_notifier(), name="ledger-notifier"),
            asyncio.create_task(batcher.run(), name="ledger-batcher"),
        ]
        if spool:
            tasks.append(
                asyncio.create_task(run_spool_replayer(spool, ingestor, stop), name="spool")
            )
        try:
            yield services
        finally:
            stop.set()
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
