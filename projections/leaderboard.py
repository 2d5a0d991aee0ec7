"""Leaderboard queries: a page of a board, and a member's rank, without scanning the guild.

Tables (sql/012_leaderboards.sql and 016, folded by projectors/leaderboards.py):

- `leaderboard_scores (guild_id, board, period, member_id) -> score` (board and period as
  integer codes: `board_code`, `period_code`), indexed on
  `(guild_id, board, period, score, member_id)`. A page is that index read backwards
  (score DESC, member_id DESC), continued with the keyset `(score, member_id) < (s, m)`: the
  top 10 is ten index entries whatever the guild's size.
- `leaderboard_buckets (guild_id, board, period, bucket) -> members`: a histogram of the
  scores, kept exact by the projector in the same transaction as the scores (every score change
  moves one member from its old bucket to its new one).

Ranks are competition ranks ("1224"): 1 + the number of members with a strictly higher score,
so ties share a rank. Counting higher scores through the score index would visit every one of
them (a million index entries for the last member of a million-member guild). Instead:

    members above s = sum(members of buckets above bucket(s))       -- histogram rows
                    + count(scores in (s, top of bucket(s)])       -- a short index range

`score_bucket` (projections/periods.py) gives every score below 128 its own bucket and above
that groups the scores sharing their 8 leading bits, so there are at most ~7,300 buckets for the
whole 63-bit range (a few hundred for real XP and LC figures), and the index range is confined
to scores within 0.8% of the member's own. Exact low-score buckets matter: they are where the
crowds are (everyone who joined has earned the same 25 LC), and a member there counts nothing
in the index at all. A rank is two statements: the member's score, then both counts. Cost:
O(buckets above) + O(members in one 0.8%-wide score band), independent of the guild's size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from projections.periods import (
    Board,
    board_code,
    bucket_top,
    period_code,
    resolve_period,
    score_bucket,
)

# One row even for an empty page, so the board's size always comes back.
PAGE = """
SELECT (SELECT coalesce(sum(b.members), 0) FROM leaderboard_buckets b
         WHERE b.guild_id = %(guild)s AND b.board = %(board)s AND b.period = %(period)s),
       page.member_id, page.score
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
       SELECT member_id, score FROM leaderboard_scores
        WHERE guild_id = %(guild)s AND board = %(board)s AND period = %(period)s
          AND (score, member_id) < (%(score)s, %(member)s)
        ORDER BY score DESC, member_id DESC
        LIMIT %(limit)s OFFSET %(offset)s) AS page ON true
"""

SCORE = """
SELECT score FROM leaderboard_scores
 WHERE guild_id = %s AND board = %s AND period = %s AND member_id = %s
"""

ABOVE = """
SELECT s.score,
       (SELECT coalesce(sum(b.members), 0) FROM leaderboard_buckets b
         WHERE b.guild_id = %(guild)s AND b.board = %(board)s AND b.period = %(period)s
           AND b.bucket > s.bucket)
     + (SELECT count(*) FROM leaderboard_scores x
         WHERE x.guild_id = %(guild)s AND x.board = %(board)s AND x.period = %(period)s
           AND x.score > s.score AND x.score <= s.top),
       (SELECT coalesce(sum(b.members), 0) FROM leaderboard_buckets b
         WHERE b.guild_id = %(guild)s AND b.board = %(board)s AND b.period = %(period)s)
  FROM unnest(%(scores)s::int8[], %(buckets)s::int8[], %(tops)s::int8[]) AS s(score, bucket, top)
"""

# Beyond any real score: the keyset start of the first page.
_TOP = (2**63 - 1, 2**63 - 1)
MAX_PAGE_SIZE = 100


class LeaderboardEntry(msgspec.Struct, frozen=True):
    """One line of a leaderboard."""

    rank: int
    member_id: int
    score: int


class LeaderboardPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a board; pass `next_after` as `after` for the next page (None at the end)."""

    board: str
    period: str
    entries: list[LeaderboardEntry]
    members: int  # members on this board in this period
    next_after: tuple[int, int] | None


class Rank(msgspec.Struct, frozen=True, kw_only=True):
    """A member's place on a board."""

    board: str
    period: str
    member_id: int
    score: int
    rank: int
    members: int


async def count_above(
    conn: psycopg.AsyncConnection[Any],
    guild_id: int,
    board: str,
    period: str,
    scores: Sequence[int],
) -> tuple[dict[int, int], int]:
    """For each score, how many members of the board have a higher one; and the board's size."""
    if not scores:
        return {}, 0
    params = {
        "guild": guild_id,
        "board": board_code(board),
        "period": period_code(period),
        "scores": list(scores),
        "buckets": [score_bucket(s) for s in scores],
        "tops": [bucket_top(score_bucket(s)) for s in scores],
    }
    cur = await conn.execute(ABOVE, params)
    rows = await cur.fetchall()
    return {score: above for score, above, _ in rows}, rows[0][2]


async def leaderboard(
    pool: AsyncConnectionPool,
    guild_id: int,
    board: Board = "xp",
    period: str = "all",
    at: date | datetime | None = None,
    *,
    limit: int = 10,
    offset: int = 0,
    after: tuple[int, int] | None = None,
) -> LeaderboardPage:
    """A page of the `board` ('xp' or 'lc' earned) for a period, highest score first.

    `period` is 'all', 'day', 'week' or 'month' (the one containing `at`, default now, UTC) or
    a period key such as 'day:2024-05-01' (past periods are kept). Page with `after` (the
    previous page's `next_after`; constant cost) or `offset` (cost grows with it).
    """
    if not 0 < limit <= MAX_PAGE_SIZE or offset < 0:
        raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE} and offset at least 0")
    key = resolve_period(period, at)
    start = after or _TOP
    params = {
        "guild": guild_id,
        "board": board_code(board),
        "period": period_code(key),
        "score": start[0],
        "member": start[1],
        "limit": limit,
        "offset": offset,
    }
    async with pool.connection() as conn:
        cur = await conn.execute(PAGE, params)
        fetched = await cur.fetchall()
        members = fetched[0][0]
        rows = [row for row in fetched if row[1] is not None]
        if not rows:
            return LeaderboardPage(
                board=board, period=key, entries=[], members=members, next_after=None
            )
        ranks = await _page_ranks(
            conn, guild_id, board, key, [r[2] for r in rows], at_top=after is None and offset == 0
        )
    entries = [LeaderboardEntry(ranks[score], member, score) for _, member, score in rows]
    last = rows[-1]
    return LeaderboardPage(
        board=board,
        period=key,
        entries=entries,
        members=members,
        next_after=(last[2], last[1]) if len(rows) == limit else None,
    )


async def _page_ranks(
    conn: psycopg.AsyncConnection[Any],
    guild_id: int,
    board: str,
    period: str,
    scores: Sequence[int],
    at_top: bool,
) -> dict[int, int]:
    """Competition ranks of a page's scores (descending), with at most one count query.

    Rows of a score strictly inside the page are all on it, so from the second distinct score
    on, rank(next) = rank(previous) + rows of the previous score on the page. Only the first
    score's ties may lie on earlier pages: the first two ranks come from the histogram unless
    the page starts at the top.
    """
    distinct = sorted(set(scores), reverse=True)
    on_page = {s: scores.count(s) for s in distinct}
    ranks: dict[int, int] = {}
    if at_top:
        ranks[distinct[0]] = 1
    else:
        above, _ = await count_above(conn, guild_id, board, period, distinct[:2])
        for score, count in above.items():
            ranks[score] = count + 1
    for previous, score in itertools.pairwise(distinct):
        if score not in ranks:
            ranks[score] = ranks[previous] + on_page[previous]
    return ranks


async def rank(
    pool: AsyncConnectionPool,
    guild_id: int,
    member_id: int,
    board: Board = "xp",
    period: str = "all",
    at: date | datetime | None = None,
) -> Rank | None:
    """The member's rank on a board in a period; None when they have no score there."""
    key = resolve_period(period, at)
    async with pool.connection() as conn:
        cur = await conn.execute(SCORE, (guild_id, board_code(board), period_code(key), member_id))
        row = await cur.fetchone()
        if row is None:
            return None
        score = row[0]
        above, members = await count_above(conn, guild_id, board, key, [score])
    return Rank(
        board=board,
        period=key,
        member_id=member_id,
        score=score,
        rank=above[score] + 1,
        members=members,
    )
