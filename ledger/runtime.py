"""Wiring for entry points: open a pool, migrate, and hand out the store and services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from ledger.database import make_pool
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.migrations import migrate
from ledger.service import Ledger
from ledger.store import EventStore


@dataclass
class Services:
    """The write side, ready to use: pool, store, command service, XP batcher."""

    pool: AsyncConnectionPool
    store: EventStore
    ledger: Ledger
    ingestor: BatchIngestor
    batcher: CommandBatcher


@contextlib.asynccontextmanager
async def open_services(url: str, max_connections: int = 20) -> AsyncIterator[Services]:
    """Open a pool on `url`, apply migrations, run the NOTIFY hinter and the XP batcher.

    On exit the batcher drains what is queued before the pool closes.
    """
    async with make_pool(url, min_size=2, max_size=max_connections) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
        store = EventStore(pool)
        ingestor = BatchIngestor(store)
        services = Services(pool, store, Ledger(store), ingestor, CommandBatcher(ingestor))
        tasks = [
            asyncio.create_task(store.run_notifier(), name="ledger-notifier"),
            asyncio.create_task(services.batcher.run(), name="ledger-xp-batcher"),
        ]
        try:
            yield services
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
