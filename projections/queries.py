"""The read API the gateway uses: one member's figures, warnings, moderation log, history.

Every function takes the pool to read from (a replica's is fine: these only read) and answers
with one or two indexed statements. Figures come from the read tables, so they trail a command
by the projectors' lag; a command's own reply uses its result instead (read-your-writes).
Leaderboards and ranks are in `projections.leaderboard`; a member's history (re-exported
here) in `projections.history`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from psycopg_pool import AsyncConnectionPool

from ledger.levels import progress
from projections.history import HistoryEntry as HistoryEntry
from projections.history import HistoryPage as HistoryPage
from projections.history import history as history
from projections.leaderboard import count_above
from projections.periods import ALL_TIME, ALL_TIME_CODE, BOARD_CODES

WarningStatus = Literal["active", "pardoned", "expired"]
MAX_PAGE = 100

BALANCE = """
SELECT balance, earned, minted, burned, received, sent FROM balances
 WHERE guild_id = %s AND member_id = %s
"""

PROFILE = """
SELECT l.xp, l.messages, l.voice_seconds, s.score
  FROM levels l
  LEFT JOIN leaderboard_scores s
    ON s.guild_id = l.guild_id AND s.board = %s AND s.period = %s AND s.member_id = l.member_id
 WHERE l.guild_id = %s AND l.member_id = %s
"""

INVENTORY = """
SELECT 0, item, quantity, 0, NULL::timestamptz FROM inventory
 WHERE guild_id = %(guild)s AND member_id = %(member)s
UNION ALL
SELECT 1, item, factor_pct, games_left, activated_at FROM active_multipliers
 WHERE guild_id = %(guild)s AND member_id = %(member)s
 ORDER BY 1, 2
"""

WARNINGS = """
SELECT warning_id, status, moderator_id, reason, issued_at, expires_at, issued_position,
       closed_at, closed_by, close_reason
  FROM warnings
 WHERE guild_id = %s AND member_id = %s AND (%s::text IS NULL OR status = %s)
 ORDER BY issued_position DESC
"""

WARNINGS_DUE = """
SELECT member_id, warning_id, expires_at FROM warnings
 WHERE guild_id = %s AND status = 'active' AND expires_at <= %s
 ORDER BY expires_at
 LIMIT %s
"""

MODERATION_LOG = """
SELECT position, member_id, action, moderator_id, warning_id, reason, at, active_warnings,
       duration_minutes
  FROM moderation_log
 WHERE guild_id = %(guild)s AND position < %(before)s
   AND (%(member)s::bigint IS NULL OR member_id = %(member)s)
 ORDER BY position DESC
 LIMIT %(limit)s
"""

ACTIVITY = """
SELECT * FROM activity_counters WHERE guild_id = %s AND member_id = %s
"""

ECONOMY = """
SELECT count(*), coalesce(sum(balance), 0), coalesce(sum(minted), 0), coalesce(sum(burned), 0),
       coalesce(sum(sent), 0)
  FROM balances WHERE guild_id = %s
"""


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """A member's LC: balance = minted - burned + received - sent."""

    balance: int
    earned: int
    minted: int
    burned: int
    received: int
    sent: int


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """XP and level with progress into it, message and voice totals, all-time XP rank."""

    xp: int
    level: int
    xp_into_level: int
    xp_for_level: int  # XP this level takes in all
    xp_to_next_level: int
    messages: int
    voice_seconds: int
    rank: int | None
    ranked_members: int


class Item(msgspec.Struct, frozen=True):
    """An item and how many the member holds."""

    item: str
    quantity: int


class Multiplier(msgspec.Struct, frozen=True, kw_only=True):
    """The multiplier item in force."""

    item: str
    factor_pct: int
    games_left: int
    activated_at: datetime


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    """A member's items and active multiplier."""

    items: list[Item]
    multiplier: Multiplier | None


class WarningRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One warning and what became of it."""

    warning_id: str
    status: str
    moderator_id: int
    reason: str
    issued_at: datetime
    expires_at: datetime
    position: int
    closed_at: datetime | None
    closed_by: int | None
    close_reason: str | None


class DueWarning(msgspec.Struct, frozen=True):
    """An active warning whose expiry has passed (for the scheduler)."""

    member_id: int
    warning_id: str
    expires_at: datetime


class ModerationEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the moderation log."""

    position: int
    member_id: int
    action: str
    moderator_id: int
    warning_id: str
    reason: str
    at: datetime
    active_warnings: int
    duration_minutes: int


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """Per-member counters for quests and achievements (column names of activity_counters)."""

    counters: dict[str, int]
    first_active_at: datetime
    last_active_at: datetime


class Economy(msgspec.Struct, frozen=True, kw_only=True):
    """A guild's money: total balance = minted - burned; transfers move `transferred`."""

    wallets: int
    total_balance: int
    minted: int
    burned: int
    transferred: int


def _page_size(limit: int) -> int:
    if not 0 < limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    return limit


async def balance(pool: AsyncConnectionPool, guild_id: int, member_id: int) -> Balance | None:
    """The member's LC figures; None when they have no wallet."""
    async with pool.connection() as conn:
        cur = await conn.execute(BALANCE, (guild_id, member_id))
        row = await cur.fetchone()
    if row is None:
        return None
    return Balance(
        balance=row[0], earned=row[1], minted=row[2], burned=row[3], received=row[4], sent=row[5]
    )


async def profile(pool: AsyncConnectionPool, guild_id: int, member_id: int) -> Profile | None:
    """XP, level, progress to the next level and all-time XP rank; None before any XP."""
    async with pool.connection() as conn:
        cur = await conn.execute(PROFILE, (BOARD_CODES["xp"], ALL_TIME_CODE, guild_id, member_id))
        row = await cur.fetchone()
        if row is None:
            return None
        xp, messages, voice, score = row
        rank, members = None, 0
        if score is not None:
            above, members = await count_above(conn, guild_id, "xp", ALL_TIME, [score])
            rank = above[score] + 1
    level, into, needed = progress(xp)
    return Profile(
        xp=xp,
        level=level,
        xp_into_level=into,
        xp_for_level=needed,
        xp_to_next_level=max(needed - into, 0),
        messages=messages,
        voice_seconds=voice,
        rank=rank,
        ranked_members=members,
    )


async def inventory(pool: AsyncConnectionPool, guild_id: int, member_id: int) -> Inventory:
    """The member's items (by name) and active multiplier."""
    async with pool.connection() as conn:
        cur = await conn.execute(INVENTORY, {"guild": guild_id, "member": member_id})
        rows = await cur.fetchall()
    items = [Item(name, quantity) for kind, name, quantity, _, _ in rows if kind == 0]
    multiplier = next(
        (
            Multiplier(item=name, factor_pct=factor, games_left=left, activated_at=at)
            for kind, name, factor, left, at in rows
            if kind == 1
        ),
        None,
    )
    return Inventory(items=items, multiplier=multiplier)


async def warnings(
    pool: AsyncConnectionPool,
    guild_id: int,
    member_id: int,
    status: WarningStatus | None = None,
) -> list[WarningRecord]:
    """The member's warnings, newest first, optionally only those with `status`."""
    async with pool.connection() as conn:
        cur = await conn.execute(WARNINGS, (guild_id, member_id, status, status))
        rows = await cur.fetchall()
    return [
        WarningRecord(
            warning_id=r[0],
            status=r[1],
            moderator_id=r[2],
            reason=r[3],
            issued_at=r[4],
            expires_at=r[5],
            position=r[6],
            closed_at=r[7],
            closed_by=r[8],
            close_reason=r[9],
        )
        for r in rows
    ]


async def warnings_due(
    pool: AsyncConnectionPool, guild_id: int, as_of: datetime, limit: int = 1000
) -> list[DueWarning]:
    """Active warnings whose expiry is at or before `as_of`, oldest first (scheduler)."""
    async with pool.connection() as conn:
        cur = await conn.execute(WARNINGS_DUE, (guild_id, as_of, limit))
        return [DueWarning(*row) for row in await cur.fetchall()]


async def moderation_log(
    pool: AsyncConnectionPool,
    guild_id: int,
    member_id: int | None = None,
    *,
    limit: int = 20,
    before: int | None = None,
) -> list[ModerationEntry]:
    """The guild's (or one member's) moderation trail, newest first, before position `before`."""
    params = {
        "guild": guild_id,
        "member": member_id,
        "before": before if before is not None else 2**63 - 1,
        "limit": _page_size(limit),
    }
    async with pool.connection() as conn:
        cur = await conn.execute(MODERATION_LOG, params)
        rows = await cur.fetchall()
    return [
        ModerationEntry(
            position=r[0],
            member_id=r[1],
            action=r[2],
            moderator_id=r[3],
            warning_id=r[4],
            reason=r[5],
            at=r[6],
            active_warnings=r[7],
            duration_minutes=r[8],
        )
        for r in rows
    ]


async def activity(pool: AsyncConnectionPool, guild_id: int, member_id: int) -> Activity | None:
    """The member's activity counters; None before any activity."""
    async with pool.connection() as conn:
        cur = await conn.execute(ACTIVITY, (guild_id, member_id))
        row = await cur.fetchone()
        names = [c.name for c in cur.description or ()]
    if row is None:
        return None
    values = dict(zip(names, row, strict=True))
    first, last = values.pop("first_active_at"), values.pop("last_active_at")
    del values["guild_id"], values["member_id"]
    return Activity(counters=values, first_active_at=first, last_active_at=last)


async def economy(pool: AsyncConnectionPool, guild_id: int) -> Economy:
    """The guild's money supply (a scan of its wallets: for summaries, not per message)."""
    async with pool.connection() as conn:
        cur = await conn.execute(ECONOMY, (guild_id,))
        row = await cur.fetchone()
    assert row is not None
    return Economy(
        wallets=row[0], total_balance=row[1], minted=row[2], burned=row[3], transferred=row[4]
    )
