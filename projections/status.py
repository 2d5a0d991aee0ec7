"""Status: where each projector is, how far behind, and what holds it back.

Lag is counted from the checkpoint to the end of the log. Events past the snapshot horizon
(`pg_snapshot_xmin`) cannot be delivered yet even when committed: the oldest transaction still
running keeps them back. When that is the case, status names it (pid, xid, age, what it runs) so
an operator can see "projection held back by transaction X" and end it if it is stuck.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from projections import checkpoints
from projections.projectors import PROJECTORS

# Read-only (it can run on a replica): projectors that never ran show at the log's start.
STATUS = """
SELECT p.projector, coalesce(c.tx, '0')::text, coalesce(c.position, 0),
       coalesce(c.events_applied, 0), c.updated_at, c.rebuilt_at,
       lag.events, coalesce(extract(epoch FROM now() - lag.oldest), 0)::float8, lag.held_back,
       (SELECT l.pid FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int8 = %s
           AND l.objid::int8 = p.lock_id AND l.objsubid = 2
         LIMIT 1)
  FROM unnest(%s::text[], %s::int8[]) AS p(projector, lock_id)
  LEFT JOIN projector_checkpoints c USING (projector)
  CROSS JOIN LATERAL (
       SELECT count(*) AS events, min(e.recorded_at) AS oldest,
              count(*) FILTER (WHERE e.tx >= pg_snapshot_xmin(pg_current_snapshot()))
                  AS held_back
         FROM events e
        WHERE (e.tx, e.position) > (coalesce(c.tx, '0'), coalesce(c.position, 0))) AS lag
 ORDER BY p.projector
"""

# The transaction whose xid is the horizon: the oldest one still running with an xid.
OLDEST_TRANSACTION = """
SELECT a.pid, a.backend_xid::text, extract(epoch FROM now() - a.xact_start)::float8,
       coalesce(a.state, ''), coalesce(a.application_name, ''), left(coalesce(a.query, ''), 200)
  FROM pg_stat_activity a
 WHERE a.backend_xid IS NOT NULL
 ORDER BY age(a.backend_xid) DESC
 LIMIT 1
"""

HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """The oldest open transaction, which keeps committed events from being delivered."""

    pid: int
    xid: str
    age_seconds: float
    state: str
    application: str
    query: str


class ProjectorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One projector: checkpoint, lag, what holds it back, and whether a worker leases it."""

    name: str
    checkpoint: tuple[int, int]  # (tx, position)
    events_applied: int
    updated_at: datetime | None
    rebuilt_at: datetime | None
    lag_events: int  # events after the checkpoint
    lag_seconds: float  # age of the oldest of them (0 when none)
    held_back_events: int  # of those, committed but past the horizon
    held_back_by: Holder | None
    horizon: str  # pg_snapshot_xmin now
    lease_pid: int | None  # backend pid of the worker holding the lease

    @property
    def leased(self) -> bool:
        """True when a worker holds the projector's lease."""
        return self.lease_pid is not None


async def oldest_transaction(conn: psycopg.AsyncConnection[Any]) -> Holder | None:
    """The oldest transaction running with an xid: the one that sets the horizon (or None)."""
    cur = await conn.execute(OLDEST_TRANSACTION)
    found = await cur.fetchone()
    if found is None:
        return None
    pid, xid, age, state, application, query = found
    return Holder(
        pid=pid, xid=xid, age_seconds=age or 0.0, state=state, application=application, query=query
    )


async def status(pool: AsyncConnectionPool) -> list[ProjectorStatus]:
    """The status of every projector (those that never ran show as at the log's start)."""
    names = list(PROJECTORS)
    async with pool.connection() as conn:
        cur = await conn.execute(
            STATUS,
            (checkpoints.LEASE_CLASS, names, [checkpoints.lock_id(n) for n in names]),
        )
        rows = await cur.fetchall()
        cur = await conn.execute(HORIZON)
        horizon_row = await cur.fetchone()
        horizon = str(horizon_row[0]) if horizon_row else ""
        holder = await oldest_transaction(conn) if any(row[8] for row in rows) else None
    return [
        ProjectorStatus(
            name=name,
            checkpoint=(int(tx), position),
            events_applied=applied,
            updated_at=updated,
            rebuilt_at=rebuilt,
            lag_events=lag,
            lag_seconds=lag_seconds,
            held_back_events=held,
            held_back_by=holder if held else None,
            horizon=horizon,
            lease_pid=lease,
        )
        for name, tx, position, applied, updated, rebuilt, lag, lag_seconds, held, lease in rows
    ]
