"""Audits from the log alone: a member's statement with running figures, and any guild's
state as of a moment (a recorded time or a position).

A cut-off selects a prefix of each member's stream (stream order is commit order, because a
stream's state row serialises its writers), so the state as of a cut-off is the fold of that
prefix: the same `evolve` the write side uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from ledger import events as ev
from ledger.errors import InvalidInput
from ledger.member import NEW_MEMBER, MemberState, evolve, item_delta, lc_delta, xp_delta
from ledger.rules.admin import REVERTIBLE
from ledger.store import EVENT_COLUMNS, row_to_recorded

MEMBER_EVENTS = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %(guild)s AND stream = %(member)s
   AND (%(as_of)s::timestamptz IS NULL OR recorded_at <= %(as_of)s)
   AND (%(position)s::bigint IS NULL OR position <= %(position)s)
 ORDER BY version
"""  # noqa: S608 (a constant column list, no input)
GUILD_EVENTS = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %(guild)s AND stream <> 0
   AND (%(as_of)s::timestamptz IS NULL OR recorded_at <= %(as_of)s)
   AND (%(position)s::bigint IS NULL OR position <= %(position)s)
 ORDER BY stream, version
"""  # noqa: S608 (a constant column list, no input)


@dataclass(frozen=True)
class Cutoff:
    """Up to which point to replay: a recorded time, a position, or neither (everything)."""

    as_of: datetime | None = None
    position: int | None = None

    def params(self) -> dict[str, object]:
        """Query parameters."""
        return {"as_of": self.as_of, "position": self.position}


@dataclass(frozen=True)
class StatementLine:
    """One event of a member's statement, with the running figures after it."""

    position: int
    recorded_at: datetime
    at: datetime
    type: str
    description: str
    lc_delta: int
    balance: int
    xp_delta: int
    xp: int
    level: int
    items: dict[str, int]
    active_warnings: int
    actor_id: int
    command_id: str


@dataclass
class Statement:
    """A member's history and their closing figures."""

    guild_id: int
    member_id: int
    lines: list[StatementLine] = field(default_factory=list)
    closing: MemberState = NEW_MEMBER


def describe(event: ev.Event) -> str:
    """A one-line, human account of an event (ids as Discord mentions)."""
    match event:
        case ev.MemberJoined(starting_balance=amount):
            return f"joined the economy: starting balance {amount} LC"
        case ev.XpGranted(source=source, base=base, multiplier_pct=pct, xp=xp):
            return f"{source} XP +{xp} (base {base} at {pct}%)"
        case ev.GamePlayed(game=game, won=won, xp=xp, bet=bet, payout=payout):
            result = "won" if won else "lost"
            return f"{game}: {result}, +{xp} XP, bet {bet} LC, payout {payout} LC"
        case ev.DailyClaimed(amount=amount, streak=streak):
            return f"daily gift {amount} LC (streak {streak})"
        case ev.InviteRewarded(other_id=other, side=side, amount=amount):
            return f"invite reward {amount} LC ({side}, with <@{other}>)"
        case ev.TransferSent(to_id=to, amount=amount):
            return f"sent {amount} LC to <@{to}>"
        case ev.TransferReceived(from_id=sender, amount=amount):
            return f"received {amount} LC from <@{sender}>"
        case ev.LcMinted(amount=amount, reason=reason, actor_id=actor, note=note):
            return f"granted {amount} LC ({reason} by <@{actor}>{': ' + note if note else ''})"
        case ev.LcBurned(amount=amount, reason=reason, actor_id=actor, note=note):
            return f"taken {amount} LC ({reason} by <@{actor}>{': ' + note if note else ''})"
        case ev.LevelChanged(old_level=old, new_level=new):
            return f"level {old} -> {new}"
        case ev.ItemGranted(item=item, quantity=quantity, source=source):
            return f"received {quantity} x {item} ({source})"
        case ev.JackpotOpened(amount=amount):
            return f"opened a jackpot: {amount} LC"
        case ev.MultiplierActivated(item=item, games=games):
            return f"activated {item} for {games} games"
        case ev.WarningIssued(moderator_id=moderator, reason=reason):
            return f"warned by <@{moderator}>: {reason}"
        case ev.WarningPardoned(warning_id=wid, moderator_id=moderator):
            return f"warning {wid} pardoned by <@{moderator}>"
        case ev.WarningExpired(warning_id=wid):
            return f"warning {wid} expired"
        case ev.ThresholdReached(active_warnings=count, action=action, duration_minutes=mins):
            return f"{count} active warnings: {action} for {mins} min"
        case ev.Reverted(position=position, actor_id=actor, reason=reason):
            return f"revert of event {position} by <@{actor}>{': ' + reason if reason else ''}"
    return ev.event_type(event)


async def _rows(
    pool: AsyncConnectionPool, query: str, params: dict[str, object]
) -> AsyncIterator[ev.Recorded]:
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(name="audit") as cursor,
    ):
        await cursor.execute(query, params)
        async for row in cursor:
            yield row_to_recorded(row)


async def statement(
    pool: AsyncConnectionPool, guild_id: int, member_id: int, cutoff: Cutoff = Cutoff()
) -> Statement:
    """Every event of the member's stream up to `cutoff`, with running figures."""
    result = Statement(guild_id, member_id)
    state = NEW_MEMBER
    params = {"guild": guild_id, "member": member_id, **cutoff.params()}
    async for recorded in _rows(pool, MEMBER_EVENTS, params):
        event = recorded.event
        state = evolve(state, event)
        result.lines.append(
            StatementLine(
                position=recorded.position,
                recorded_at=recorded.recorded_at,
                at=event.at,
                type=ev.event_type(event),
                description=describe(event),
                lc_delta=lc_delta(event),
                balance=state.balance,
                xp_delta=xp_delta(event),
                xp=state.xp,
                level=state.level,
                items=dict(state.items) if item_delta(event)[1] else {},
                active_warnings=len(state.warnings),
                actor_id=recorded.meta.actor_id,
                command_id=recorded.meta.command_id,
            )
        )
    result.closing = state
    return result


async def guild_as_of(
    pool: AsyncConnectionPool, guild_id: int, cutoff: Cutoff = Cutoff()
) -> dict[int, MemberState]:
    """Every member's state as of `cutoff`, folded from the log (streamed)."""
    states: dict[int, MemberState] = {}
    params = {"guild": guild_id, **cutoff.params()}
    async for recorded in _rows(pool, GUILD_EVENTS, params):
        states[recorded.stream] = evolve(states.get(recorded.stream, NEW_MEMBER), recorded.event)
    return states


SELECT_FOR_REVERT = """
SELECT position FROM events
 WHERE guild_id = %(guild)s AND type = ANY(%(types)s::text[])
   AND (%(actor)s::bigint IS NULL OR (meta->>'actor_id')::bigint = %(actor)s)
   AND (%(member)s::bigint IS NULL OR stream = %(member)s)
   AND (%(since)s::timestamptz IS NULL OR recorded_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR recorded_at <= %(until)s)
 ORDER BY position
 LIMIT %(limit)s
"""


async def select_for_revert(
    pool: AsyncConnectionPool,
    guild_id: int,
    *,
    actor_id: int | None = None,
    member_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> list[int]:
    """Positions of revertible events caused by `actor_id` and/or touching `member_id` within
    [since, until] (recorded time). At least one of actor or member is required."""
    if actor_id is None and member_id is None:
        raise InvalidInput("Select events to revert by actor, by member, or by positions.")
    types = [str(t.__struct_config__.tag) for t in REVERTIBLE]
    params = {
        "guild": guild_id,
        "types": types,
        "actor": actor_id,
        "member": member_id,
        "since": since,
        "until": until,
        "limit": limit + 1,
    }
    async with pool.connection() as conn:
        cur = await conn.execute(SELECT_FOR_REVERT, params)
        positions = [row[0] for row in await cur.fetchall()]
    if len(positions) > limit:
        raise InvalidInput(f"More than {limit} events match; narrow the time range.")
    return positions
