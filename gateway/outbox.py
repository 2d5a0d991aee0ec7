"""The outbox: Discord side effects of events, recorded once and delivered at least once.

Wiring (the bot's `setup_hook`)::

    stop = asyncio.Event()
    task = asyncio.create_task(run_outbox(services, sender, stop=stop))
    ...  # on close: stop.set(); await task

or the two halves on their own: `OutboxConsumer(pool, store)` and
`OutboxDispatcher(pool, sender)`, each with `step()` / `dispatch_once()` (what tests call)
and `run(stop)`.

The consumer reads `LevelChanged` and `ThresholdReached` events in delivery order below the
snapshot horizon, from its own checkpoint in `outbox_checkpoint`, plans their effects
(`gateway.side_effects.plan_effects`) and inserts them keyed by `(guild_id, position, effect)`
with ON CONFLICT DO NOTHING, in the transaction that moves the checkpoint (compare-and-set, so
two consumers never both advance from the same place). A projection rebuild never touches these
tables, so it never fires a side effect again.

The dispatcher (`gateway.outbox_dispatcher`, re-exported here) delivers the rows at least
once, with retries and backoff; `outbox_status` counts rows per status for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from gateway.outbox_dispatcher import OutboxDispatcher
from gateway.side_effects import (
    Cause,
    SideEffectSender,
    effect_name,
    encode_effect,
    plan_effects,
)
from ledger import events as ev
from ledger.errors import LedgerError
from ledger.guild_config import GuildConfig
from ledger.runtime import Services
from ledger.store import NOTIFY_CHANNEL, Checkpoint, EventStore
from projections.log import read_batch
from projections.projector import Delivered, type_name

__all__ = ["OutboxConsumer", "OutboxDispatcher", "outbox_status", "run_outbox"]

log = logging.getLogger(__name__)

CONSUMER = "outbox"
WANTED_TYPES = (type_name(ev.LevelChanged), type_name(ev.ThresholdReached))

LOAD_CHECKPOINT = "SELECT tx::text, position FROM outbox_checkpoint WHERE consumer = %s"
ENSURE_CHECKPOINT = "INSERT INTO outbox_checkpoint (consumer) VALUES (%s) ON CONFLICT DO NOTHING"

ADVANCE = """
UPDATE outbox_checkpoint SET tx = %s::text::xid8, position = %s, updated_at = now()
 WHERE consumer = %s AND tx = %s::text::xid8 AND position = %s
"""

# The event just before each level change on the member's stream: the XP grant (or game, or
# revert) that moved the level, appended in the same command right before it.
CAUSES = """
SELECT l.guild_id, l.position, c.type, coalesce(c.data->>'source', ''),
       coalesce((c.data->>'channel_id')::bigint, 0)
  FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS l(guild_id, stream, position)
  JOIN LATERAL (
        SELECT e.type, e.data FROM events e
         WHERE e.guild_id = l.guild_id AND e.stream = l.stream AND e.position < l.position
         ORDER BY e.position DESC LIMIT 1) c ON true
"""

INSERT = """
INSERT INTO outbox (guild_id, position, effect, member_id, payload)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::bigint[], %s::text[]::jsonb[])
ON CONFLICT DO NOTHING
"""

STATUS = "SELECT status, count(*) FROM outbox GROUP BY status"


class OutboxConsumer:
    """Turns events into outbox rows, exactly once per key, from its own checkpoint."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        store: EventStore,
        *,
        batch_size: int = 1000,
        name: str = CONSUMER,
    ) -> None:
        self.pool = pool
        self.store = store
        self.batch_size = batch_size
        self.name = name

    async def step(self) -> int:
        """Process one batch; return the log rows read (0 when caught up).

        Returns 0 too when another consumer moved the checkpoint meanwhile (nothing is kept from
        this batch; the next step starts from the new checkpoint).
        """
        async with self.pool.connection() as conn:
            start = await self._checkpoint(conn)
            batch = await read_batch(conn, start, self.batch_size, WANTED_TYPES)
            if batch.end is None:
                return 0
            rows = await self._plan(conn, batch.events)
            try:
                async with conn.transaction():
                    if rows:
                        await conn.execute(
                            INSERT, [list(column) for column in zip(*rows, strict=True)]
                        )
                    end = batch.end
                    cur = await conn.execute(
                        ADVANCE,
                        (str(end.tx), end.position, self.name, str(start.tx), start.position),
                    )
                    if cur.rowcount != 1:
                        raise _CheckpointMoved
            except _CheckpointMoved:
                return 0
        return batch.read

    async def catch_up(self) -> int:
        """Step until nothing is left below the horizon; return the log rows read."""
        total = 0
        while read := await self.step():
            total += read
        return total

    async def _checkpoint(self, conn: psycopg.AsyncConnection[Any]) -> Checkpoint:
        cur = await conn.execute(LOAD_CHECKPOINT, (self.name,))
        row = await cur.fetchone()
        if row is None:
            await conn.execute(ENSURE_CHECKPOINT, (self.name,))
            return Checkpoint()
        return Checkpoint(tx=int(row[0]), position=row[1])

    async def _plan(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[Delivered]
    ) -> list[tuple[int, int, str, int, str]]:
        """The outbox rows of a batch: (guild, position, effect, member, payload)."""
        if not events:
            return []
        causes = await self._causes(conn, events)
        configs: dict[int, GuildConfig] = {}
        rows = []
        for d in events:
            if d.guild_id not in configs:
                configs[d.guild_id] = (await self.store.load(d.guild_id, [], [])).config
            cause = causes.get((d.guild_id, d.position))
            for effect in plan_effects(d.event, configs[d.guild_id], cause):
                rows.append(
                    (
                        d.guild_id,
                        d.position,
                        effect_name(effect),
                        effect.member_id,
                        encode_effect(effect),
                    )
                )
        return rows

    @staticmethod
    async def _causes(
        conn: psycopg.AsyncConnection[Any], events: Sequence[Delivered]
    ) -> dict[tuple[int, int], Cause]:
        changes = [d for d in events if isinstance(d.event, ev.LevelChanged)]
        if not changes:
            return {}
        cur = await conn.execute(
            CAUSES,
            (
                [d.guild_id for d in changes],
                [d.event.member_id for d in changes],
                [d.position for d in changes],
            ),
        )
        return {
            (guild, position): Cause(type_, source, channel)
            for guild, position, type_, source, channel in await cur.fetchall()
        }

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Consume until `stop`: batches while there is work, then wait for a NOTIFY hint or
        a second. Sets `wake` (the dispatcher's) whenever rows may have been added. Survives
        the database going away: it reconnects with backoff."""
        while not stop.is_set():
            try:
                async with self.pool.connection() as listener:
                    channel = sql.Identifier(NOTIFY_CHANNEL)
                    await listener.execute(sql.SQL("LISTEN {}").format(channel))
                    try:
                        await self._consume(listener, stop, wake)
                    finally:
                        with contextlib.suppress(psycopg.Error):
                            await listener.execute("UNLISTEN *")
            except (psycopg.Error, OSError, LedgerError):
                log.exception("outbox consumer failed; retrying")
                await _wait(stop, random.uniform(1.0, 3.0))

    async def _consume(
        self,
        listener: psycopg.AsyncConnection[Any],
        stop: asyncio.Event,
        wake: asyncio.Event | None,
    ) -> None:
        while not stop.is_set():
            read = await self.step()
            if read and wake is not None:
                wake.set()
            if not read:
                await _wait_for_notify(listener, stop, 1.0)


class _CheckpointMoved(Exception):
    pass


async def run_outbox(
    services: Services,
    sender: SideEffectSender,
    *,
    stop: asyncio.Event,
    dispatcher_options: dict[str, Any] | None = None,
) -> None:
    """Run the consumer and the dispatcher until `stop` is set (the bot's background task)."""
    wake = asyncio.Event()
    consumer = OutboxConsumer(services.pool, services.store)
    dispatcher = OutboxDispatcher(services.pool, sender, **(dispatcher_options or {}))
    await asyncio.gather(consumer.run(stop, wake), dispatcher.run(stop, wake))


async def outbox_status(pool: AsyncConnectionPool) -> dict[str, int]:
    """How many outbox rows are in each status (pending, delivered, abandoned, superseded)."""
    async with pool.connection() as conn:
        cur = await conn.execute(STATUS)
        return {status: count for status, count in await cur.fetchall()}


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_for_notify(
    conn: psycopg.AsyncConnection[Any], stop: asyncio.Event, seconds: float
) -> None:
    """Until a NOTIFY on the listening connection, `seconds`, or `stop`."""

    async def notified() -> None:
        notifies = conn.notifies(timeout=seconds, stop_after=1)
        async with contextlib.aclosing(notifies):
            async for _ in notifies:
                break

    waiters = [asyncio.ensure_future(notified()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
