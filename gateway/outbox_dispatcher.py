"""The outbox dispatcher: delivers due outbox rows through a `SideEffectSender`.

Wiring: `OutboxDispatcher(pool, sender)`, then `await dispatcher.run(stop)` (or
`gateway.outbox.run_outbox`, which runs it beside the consumer); tests call `dispatch_once()`.

Rows are claimed with a lease in a short transaction (nothing is held open while Discord is
called), handed to the sender one by one in event order, and marked delivered; a failure is
retried with exponential backoff and jitter, and after `max_attempts`, or at once when the
sender raises `GiveUp`, the row is abandoned (its last error kept). A dispatcher that is
stopped gives its claims back at once; one that dies leaves them until the lease expires, and
the row in hand may then be sent twice, with the same nonce, which the receiver deduplicates.
A newer role sync for a member supersedes an older undelivered one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.side_effects import Delivery, GiveUp, SideEffectSender, decode_effect

log = logging.getLogger(__name__)

# A newer role sync for the same member makes an older, undelivered one wrong (a retried
# level-5 sync must not undo a delivered level-10 one in "replace" mode).
SUPERSEDE = """
UPDATE outbox o SET status = 'superseded', finished_at = now()
 WHERE o.status = 'pending' AND o.effect = 'level_roles'
   AND (o.claimed_until IS NULL OR o.claimed_until < now())
   AND EXISTS (SELECT 1 FROM outbox n
                WHERE n.guild_id = o.guild_id AND n.member_id = o.member_id
                  AND n.effect = 'level_roles' AND n.position > o.position
                  AND n.status IN ('pending', 'delivered'))
"""

CLAIM = """
UPDATE outbox o
   SET claimed_by = %(me)s, claimed_until = now() + make_interval(secs => %(lease)s),
       attempts = o.attempts + 1
  FROM (SELECT guild_id, position, effect FROM outbox
         WHERE status = 'pending' AND next_attempt_at <= now()
           AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY position, effect
         LIMIT %(limit)s
         FOR UPDATE SKIP LOCKED) due
 WHERE (o.guild_id, o.position, o.effect) = (due.guild_id, due.position, due.effect)
RETURNING o.guild_id, o.position, o.payload::text, o.attempts
"""

DELIVERED = """
UPDATE outbox SET status = 'delivered', finished_at = now(), claimed_by = NULL,
                  claimed_until = NULL, last_error = NULL
 WHERE guild_id = %s AND position = %s AND effect = %s AND status = 'pending'
"""

FAILED = """
UPDATE outbox
   SET status = CASE WHEN %(give_up)s OR attempts >= %(max)s THEN 'abandoned' ELSE 'pending' END,
       finished_at = CASE WHEN %(give_up)s OR attempts >= %(max)s THEN now() END,
       next_attempt_at = now() + make_interval(secs => %(delay)s),
       claimed_by = NULL, claimed_until = NULL, last_error = left(%(error)s, 500)
 WHERE guild_id = %(guild)s AND position = %(position)s AND effect = %(effect)s
   AND status = 'pending'
"""

# Rows a stopped dispatcher claimed: back to the queue at once (with the attempt refunded for
# those it never tried).
RELEASE = """
UPDATE outbox SET claimed_by = NULL, claimed_until = NULL, attempts = greatest(attempts - %s, 0)
 WHERE claimed_by = %s AND status = 'pending'
   AND (guild_id, position, effect) IN (
        SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[]))
"""


class OutboxDispatcher:
    """Delivers due outbox rows through a `SideEffectSender`, with retries and backoff."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        sender: SideEffectSender,
        *,
        batch_size: int = 20,
        lease_seconds: float = 60.0,
        max_attempts: int = 8,
        base_delay: float = 5.0,
        max_delay: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    async def dispatch_once(self) -> int:
        """Claim up to `batch_size` due rows and deliver them in event order; return how many
        were claimed. If cancelled, rows not yet attempted are released for others at once."""
        async with self.pool.connection() as conn:
            await conn.execute(SUPERSEDE)
            cur = await conn.execute(
                CLAIM,
                {"me": self.identity, "lease": self.lease_seconds, "limit": self.batch_size},
            )
            claimed = [
                Delivery(guild_id=g, position=p, effect=decode_effect(payload), attempt=n)
                for g, p, payload, n in await cur.fetchall()
            ]
        claimed.sort(key=lambda d: (d.position, d.key[2]))
        untouched = list(claimed)
        in_flight: list[Delivery] = []
        try:
            while untouched:
                in_flight = [untouched.pop(0)]
                await self._deliver(in_flight[0])
                in_flight = []
        finally:
            if in_flight or untouched:
                await asyncio.shield(self._release(in_flight, untouched))
        return len(claimed)

    async def drain(self) -> int:
        """Dispatch until nothing is due; return how many rows were claimed in all."""
        total = 0
        while claimed := await self.dispatch_once():
            total += claimed
        return total

    async def _deliver(self, delivery: Delivery) -> None:
        guild, position, effect = delivery.key
        try:
            await self.sender.send(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            give_up = isinstance(exc, GiveUp)
            delay = min(self.max_delay, self.base_delay * 2 ** (delivery.attempt - 1))
            log.warning(
                "side effect %s at %s in guild %s failed (attempt %s): %s",
                effect,
                position,
                guild,
                delivery.attempt,
                exc,
            )
            async with self.pool.connection() as conn:
                await conn.execute(
                    FAILED,
                    {
                        "give_up": give_up,
                        "max": self.max_attempts,
                        "delay": delay * random.uniform(0.5, 1.0),
                        "error": f"{type(exc).__name__}: {exc}",
                        "guild": guild,
                        "position": position,
                        "effect": effect,
                    },
                )
            return
        async with self.pool.connection() as conn:
            await conn.execute(DELIVERED, (guild, position, effect))

    async def _release(self, attempted: Sequence[Delivery], untouched: Sequence[Delivery]) -> None:
        """Give claimed rows back; those never attempted get their attempt back too."""
        async with self.pool.connection() as conn:
            for deliveries, refund in ((attempted, 0), (untouched, 1)):
                if deliveries:
                    guilds, positions, effects = zip(*(d.key for d in deliveries), strict=True)
                    await conn.execute(
                        RELEASE,
                        (refund, self.identity, list(guilds), list(positions), list(effects)),
                    )

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Dispatch until `stop`: while rows are due, then until `wake` or a second passes
        (retries come due on their own). Finishes the batch in hand before returning."""
        wake = wake or asyncio.Event()
        while not stop.is_set():
            wake.clear()
            try:
                claimed = await self.dispatch_once()
            except (psycopg.Error, OSError):
                log.exception("outbox dispatcher failed; retrying")
                claimed = 0
                await _wait(stop, random.uniform(1.0, 3.0))
            if not claimed:
                waiters = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
                try:
                    await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
