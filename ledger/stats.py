"""Guild statistics folded from the log: LC supply, minted and burned per day, XP per day,
warnings per week, the biggest earners and movers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date

from psycopg_pool import AsyncConnectionPool

from ledger import events as ev
from ledger.member import lc_delta, xp_delta

GUILD_EVENTS = """
SELECT stream, type, schema_version, data::text FROM events WHERE guild_id = %s ORDER BY position
"""


@dataclass
class GuildStats:
    """Aggregates over a guild's whole log, by UTC day (of the decision time `at`)."""

    guild_id: int
    events: int = 0
    supply: int = 0
    minted: Counter[date] = field(default_factory=Counter)
    burned: Counter[date] = field(default_factory=Counter)
    xp: Counter[date] = field(default_factory=Counter)
    warnings: Counter[tuple[int, int]] = field(default_factory=Counter)  # ISO (year, week)
    earned: Counter[int] = field(default_factory=Counter)  # LC minted to a member
    moved: Counter[int] = field(default_factory=Counter)  # LC a member sent and received

    def top(self, counter: Counter[int], n: int) -> list[tuple[int, int]]:
        """The `n` largest entries, ties broken by member id."""
        return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


async def guild_stats(pool: AsyncConnectionPool, guild_id: int) -> GuildStats:
    """One streamed pass over the guild's events."""
    stats = GuildStats(guild_id)
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(name="stats") as cursor,
    ):
        await cursor.execute(GUILD_EVENTS, (guild_id,))
        async for stream, type_name, schema, data in cursor:
            event = ev.decode(data, type_name, schema)
            stats.events += 1
            day = event.at.astimezone(UTC).date()
            delta = lc_delta(event)
            if isinstance(event, ev.TransferSent | ev.TransferReceived):
                stats.moved[stream] += abs(delta)
            elif delta > 0:
                stats.minted[day] += delta
                stats.earned[stream] += delta
            elif delta < 0:
                stats.burned[day] -= delta
            stats.supply += delta
            gained = xp_delta(event)
            if gained:
                stats.xp[day] += gained
            if isinstance(event, ev.WarningIssued):
                iso = day.isocalendar()
                stats.warnings[(iso.year, iso.week)] += 1
    return stats
