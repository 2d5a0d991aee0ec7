"""A member's history: the events on their stream, newest first, with what each changed.

Read from the log itself (the events table is the source; no read table is needed): the page
walks the `(guild_id, stream, version)` index backwards from the cursor.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from psycopg_pool import AsyncConnectionPool

from ledger import events as ev
from ledger.member import item_delta, lc_delta, xp_delta

MAX_PAGE = 100

# Within a stream, versions follow positions (appends to a stream are serialised by its state
# row), so the page walks the (guild_id, stream, version) index from the cursor's version.
HISTORY = """
SELECT e.position, e.type, e.schema_version, e.data::text, e.meta::text, e.recorded_at
  FROM events e
 WHERE e.guild_id = %(guild)s AND e.stream = %(member)s
   AND e.version < coalesce(
        (SELECT c.version FROM events c
          WHERE c.guild_id = %(guild)s AND c.position = %(before)s AND c.stream = %(member)s),
        9223372036854775807)
 ORDER BY e.version DESC
 LIMIT %(limit)s
"""


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event on a member's stream, with what it changed."""

    position: int
    type: str
    event: ev.AnyEvent
    command_id: str
    actor_id: int
    recorded_at: datetime
    lc_delta: int
    xp_delta: int
    item: str
    item_delta: int


class HistoryPage(msgspec.Struct, frozen=True, kw_only=True):
    """Newest first; pass `next_before` as `before` for older entries (None at the end)."""

    entries: list[HistoryEntry]
    next_before: int | None


def _page_size(limit: int) -> int:
    if not 0 < limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    return limit


async def history(
    pool: AsyncConnectionPool,
    guild_id: int,
    member_id: int,
    *,
    limit: int = 20,
    before: int | None = None,
) -> HistoryPage:
    """Events on the member's stream, newest first, older than position `before`."""
    params = {"guild": guild_id, "member": member_id, "before": before, "limit": _page_size(limit)}
    async with pool.connection() as conn:
        cur = await conn.execute(HISTORY, params)
        rows = await cur.fetchall()
    entries = []
    for position, type_name, schema, data, meta_text, recorded_at in rows:
        event = ev.decode(data, type_name, schema)
        meta = ev.decode_meta(meta_text)
        item, count = item_delta(event)
        entries.append(
            HistoryEntry(
                position=position,
                type=type_name,
                event=event,
                command_id=meta.command_id,
                actor_id=meta.actor_id,
                recorded_at=recorded_at,
                lc_delta=lc_delta(event),
                xp_delta=xp_delta(event),
                item=item,
                item_delta=count,
            )
        )
    more = len(entries) == limit
    return HistoryPage(entries=entries, next_before=entries[-1].position if more else None)
