"""Invariant checks after the projection workloads: a fast wrong answer counts as a failure.

- `projection_invariants`: `projections.verify`, the replay of the log compared with every
  read table (exact, but it folds the whole log in memory: minutes for ten million events).
- `cross_check`: the read tables of one guild against the write side's state rows (each the
  fold of its member's stream), in SQL, so it scales to a million members: balances, XP, levels,
  inventory and the all-time XP board equal the state rows, activity's message count equals
  the levels table's, LC is conserved (balance = minted - burned + received - sent, transfers
  net to zero), and the score histogram counts exactly the scores.
- `write_side`: `ledger.consistency.check_guild`, the state rows against the fold of the log.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec

import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.consistency import check_guild
from projections import verify
from projections.periods import ALL_TIME_CODE, BOARD_CODES

MEMBERS_AGAINST_STATE = """
SELECT count(*) FILTER (WHERE coalesce(b.balance, 0) <> (s.state->>'balance')::int8),
       count(*) FILTER (WHERE coalesce(l.xp, 0) <> (s.state->>'xp')::int8
                           OR coalesce(l.level, 0) <> (s.state->>'level')::int8),
       count(*) FILTER (WHERE coalesce(x.score, 0) <> (s.state->>'xp')::int8),
       count(*) FILTER (WHERE coalesce(i.items, '{}') <> coalesce(s.state->'items', '{}')),
       count(*) FILTER (WHERE coalesce(a.messages, 0) <> coalesce(l.messages, 0)),
       count(*)
  FROM streams s
  LEFT JOIN balances b ON b.guild_id = s.guild_id AND b.member_id = s.stream
  LEFT JOIN levels l ON l.guild_id = s.guild_id AND l.member_id = s.stream
  LEFT JOIN activity_counters a ON a.guild_id = s.guild_id AND a.member_id = s.stream
  LEFT JOIN leaderboard_scores x
    ON x.guild_id = s.guild_id AND x.board = %s AND x.period = %s AND x.member_id = s.stream
  LEFT JOIN LATERAL (
       SELECT jsonb_object_agg(v.item, v.quantity) AS items FROM inventory v
        WHERE v.guild_id = s.guild_id AND v.member_id = s.stream) AS i ON true
 WHERE s.guild_id = %s AND s.stream <> 0
"""
CHECKS = ("balances", "levels", "xp board", "inventory", "activity")
# Right after a workload has filled the read tables they have no statistics yet (autovacuum
# analyses them up to a minute later), and the join above then plans nested loops over
# sequential scans: more than the pool's 30 s statement limit on P4's guild, 0.6 s once analysed.
ANALYZE_CHECKED = (
    "ANALYZE streams, balances, levels, activity_counters, leaderboard_scores, inventory"
)

CONSERVATION = """
SELECT coalesce(sum(balance - (minted - burned + received - sent)), 0),
       coalesce(sum(received) - sum(sent), 0)
  FROM balances WHERE guild_id = %s
"""

HISTOGRAM = """
SELECT count(*)
  FROM (SELECT board, period, count(*) AS n FROM leaderboard_scores
         WHERE guild_id = %(guild)s GROUP BY board, period) AS s
  FULL JOIN (SELECT board, period, sum(members) AS n FROM leaderboard_buckets
              WHERE guild_id = %(guild)s GROUP BY board, period) AS b USING (board, period)
 WHERE s.n IS DISTINCT FROM b.n
"""


P = ParamSpec("P")


def reported(check: Callable[P, Awaitable[str]]) -> Callable[P, Awaitable[str]]:
    """A check the database refused or cut short reads as a failed check, so the run goes on
    and keeps the figures of the other workloads."""

    @functools.wraps(check)
    async def run(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return await check(*args, **kwargs)
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines()
            return f"could not check ({type(exc).__name__}: {lines[0] if lines else ''})"

    return run


@reported
async def projection_invariants(pool: AsyncConnectionPool, names: list[str] | None = None) -> str:
    """'ok' when `projections.verify` finds the tables equal to a replay of the log."""
    report = await verify(pool, names)
    if report.ok:
        return "ok"
    bad = [f"{t.table}: {t.difference_count} rows differ" for t in report.tables if not t.ok]
    return "; ".join(bad[:3])


@reported
async def cross_check(pool: AsyncConnectionPool, guild_id: int) -> str:
    """'ok' when the guild's read tables agree with its state rows and conserve LC."""
    problems = []
    async with pool.connection() as conn:
        await conn.execute(ANALYZE_CHECKED)
        cur = await conn.execute(
            MEMBERS_AGAINST_STATE, (BOARD_CODES["xp"], ALL_TIME_CODE, guild_id)
        )
        row = await cur.fetchone()
        assert row is not None
        *differing, members = row
        problems += [
            f"{name}: {n} of {members} members differ from their state rows"
            for name, n in zip(CHECKS, differing, strict=True)
            if n
        ]
        cur = await conn.execute(CONSERVATION, (guild_id,))
        flows = await cur.fetchone()
        if flows is None or any(flows):
            problems.append(f"LC not conserved in balances: {flows}")
        cur = await conn.execute(HISTOGRAM, {"guild": guild_id})
        boards = await cur.fetchone()
        if boards is None or boards[0]:
            problems.append("the score histogram does not count the scores")
    return "ok" if not problems else "; ".join(problems[:3])


@reported
async def write_side(pool: AsyncConnectionPool, guild_id: int) -> str:
    """'ok' when the guild's state rows equal the fold of its log."""
    report = await check_guild(pool, guild_id)
    return "ok" if report.ok else "; ".join(report.problems[:3])


def joined(checks: dict[str, str]) -> str:
    """'ok' when every named check is; else the failing ones by name."""
    if all(c == "ok" for c in checks.values()):
        return "ok (" + ", ".join(checks) + ")"
    return "; ".join(f"{n}: {c}" for n, c in checks.items() if c != "ok")
