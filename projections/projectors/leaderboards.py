"""The leaderboards projector: scores per board and period (`leaderboard_scores`) and the score
histogram that answers ranks without a scan (`leaderboard_buckets`).

A member gets a row in a (board, period) when an event in that period changes that board's score
(XP for 'xp', LC earned for 'lc'), and keeps it. Every change of a row's score moves one member
between buckets, so the histogram always counts exactly the rows of its (board, period).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from psycopg import sql

from ledger import events as ev
from ledger.member import xp_delta
from projections.flows import lc_earned
from projections.periods import ALL_TIME_CODE, BOARD_CODES, day_period_codes, score_bucket, utc_day
from projections.projector import Delivered, Overlay, Projector
from projections.projectors.wallets import LC_EVENTS
from projections.tables import Column, Key, Table, TableIO, cols

SCORES = Table(
    "leaderboard_scores",
    key=(
        Column("guild_id", "int8"),
        Column("board", "int4"),  # board_code: 1 xp, 2 lc
        Column("period", "int4"),  # period_code (projections/periods.py)
        Column("member_id", "int8"),
    ),
    values=(Column("score", "int8", "set"),),
    kind="state",
    member_index=3,
)

BUCKETS = Table(
    "leaderboard_buckets",
    key=(
        Column("guild_id", "int8"),
        Column("board", "int4"),
        Column("period", "int4"),
        Column("bucket", "int8"),
    ),
    values=cols("members"),
    kind="counter",
    drop_zero=True,
    member_index=None,
)

# Live batches move scores and histogram counts in the server, in one statement, instead of
# loading every touched score first. Rows that exist are updated (their RETURNING gives the old
# and the new score) and the others inserted plainly: an INSERT ... ON CONFLICT pays a
# speculative insertion per row, 30% more than a plain insert on a new guild's backlog, where
# every row is new. Only the lease holder writes these tables, so no other writer inserts a
# key between the two (if one did, the unique index would fail the batch, to be retried).
MOVE_SCORES = """
WITH updated AS (
    UPDATE {scores} AS t SET score = t.score + d.score
      FROM {stage} AS d
     WHERE t.guild_id = d.guild_id AND t.board = d.board AND t.period = d.period
       AND t.member_id = d.member_id
    RETURNING t.guild_id, t.board, t.period, t.member_id, t.score - d.score AS old, t.score AS new
), inserted AS (
    INSERT INTO {scores} (guild_id, board, period, member_id, score)
    SELECT d.guild_id, d.board, d.period, d.member_id, d.score FROM {stage} AS d
     WHERE NOT EXISTS (
        SELECT 1 FROM updated u
         WHERE u.guild_id = d.guild_id AND u.board = d.board AND u.period = d.period
           AND u.member_id = d.member_id)
    RETURNING guild_id, board, period, score
), moves AS (
    SELECT guild_id, board, period, ledger_score_bucket(new) AS bucket, 1 AS n FROM updated
    UNION ALL
    SELECT guild_id, board, period, ledger_score_bucket(old), -1 FROM updated
    UNION ALL
    SELECT guild_id, board, period, ledger_score_bucket(score), 1 FROM inserted
)
INSERT INTO {buckets} AS b (guild_id, board, period, bucket, members)
SELECT guild_id, board, period, bucket, sum(n) FROM moves
 GROUP BY guild_id, board, period, bucket HAVING sum(n) <> 0
ON CONFLICT (guild_id, board, period, bucket) DO UPDATE SET members = b.members + excluded.members
"""
DROP_EMPTY_BUCKETS = """
DELETE FROM {buckets} b USING (SELECT DISTINCT guild_id, board, period FROM {stage}) k
 WHERE b.guild_id = k.guild_id AND b.board = k.board AND b.period = k.period AND b.members = 0
"""

# A rebuild's bulk fold writes only the scores; the histogram is then counted from them, which
# is what it is by definition: how many rows of a (board, period) have a score in each bucket.
COUNT_BUCKETS = """
INSERT INTO {buckets} (guild_id, board, period, bucket, members)
SELECT guild_id, board, period, ledger_score_bucket(score), count(*) FROM {scores}
 GROUP BY guild_id, board, period, ledger_score_bucket(score)
"""

ScoreKey = tuple[int, int, int, int]  # guild, board code, period code, member
XP, LC = BOARD_CODES["xp"], BOARD_CODES["lc"]
XP_EVENTS: frozenset[type[ev.Event]] = frozenset({ev.XpGranted, ev.GamePlayed, ev.Reverted})


class LeaderboardsProjector(Projector):
    """Sums a batch per member and UTC day, rolls days up into periods, moves histogram counts."""

    name = "leaderboards"
    weight = 5  # eight score rows per event (two boards x four periods) and a histogram
    handles = LC_EVENTS | XP_EVENTS
    tables = (SCORES, BUCKETS)
    reads_tables = False  # live batches keep score deltas, moved in SQL by `flush`

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Fold the batch's XP and LC-earned changes into every period they fall in."""
        # [xp, xp changed, lc earned, lc changed] per (guild, member, day): one dict update per
        # event instead of eight (two boards x four periods).
        days: dict[tuple[int, int, int], list[int]] = {}
        for d in batch:
            event = d.event
            if type(event) is ev.XpGranted:  # most of a log: its own XP, never LC (a test)
                xp, earned = event.xp, 0
            else:
                kind = type(event)
                xp = xp_delta(event) if kind in XP_EVENTS else 0
                earned = lc_earned(event) if kind in LC_EVENTS else 0
            if not xp and not earned:
                continue
            at = event.at
            day = at.toordinal() if at.tzinfo is UTC else utc_day(at)  # utc_day's fast path
            day_key = (d.guild_id, event.member_id, day)
            acc = days.get(day_key)
            if acc is None:
                days[day_key] = [xp, xp != 0, earned, earned != 0]
            else:
                if xp:
                    acc[0] += xp
                    acc[1] = True
                if earned:
                    acc[2] += earned
                    acc[3] = True
        totals: dict[ScoreKey, int] = {}
        periods_of: dict[int, tuple[int, ...]] = {}
        for (guild, member, day), (xp, xp_changed, earned, earned_changed) in days.items():
            periods = periods_of.get(day)
            if periods is None:
                periods = periods_of[day] = (ALL_TIME_CODE, *day_period_codes(day))
            if xp_changed:
                for period in periods:
                    key = (guild, XP, period, member)
                    totals[key] = totals.get(key, 0) + xp
            if earned_changed:
                for period in periods:
                    key = (guild, LC, period, member)
                    totals[key] = totals.get(key, 0) + earned
        if state.live:  # moved in SQL by `flush`, possibly after several batches
            state.add_deltas(SCORES, totals)
            return
        await state.load(SCORES, totals)
        if state.bulk:  # the histogram is counted afterwards (`derive`)
            for key, amount in totals.items():
                row = state.get(SCORES, key)
                state.put(SCORES, key, (amount if row is None else row[0] + amount,))
            return
        # Histogram moves are summed here first: a batch moves thousands of members among a few
        # hundred buckets, and a dict update costs a fraction of a `state.add` (a move that nets
        # to zero changes nothing, so it is left out).
        moves: dict[tuple[int, int, int, int], int] = {}
        for key, amount in totals.items():
            row = state.get(SCORES, key)
            score = amount if row is None else row[0] + amount
            state.put(SCORES, key, (score,))
            guild, board, period, _ = key
            new_bucket = score_bucket(score)
            if row is not None:
                old_bucket = score_bucket(row[0])
                if old_bucket == new_bucket:
                    continue
                old_key = (guild, board, period, old_bucket)
                moves[old_key] = moves.get(old_key, 0) - 1
            new_key = (guild, board, period, new_bucket)
            moves[new_key] = moves.get(new_key, 0) + 1
        for bucket, members in moves.items():
            if members:
                state.add(BUCKETS, bucket, (members,))

    async def flush(self, state: Overlay, io: TableIO) -> int:
        """Move the scores and histogram counts of the live batches in SQL."""
        totals = state.take_deltas(SCORES)
        await _move_in_sql(io, totals)
        return len(totals) + await state.flush(io)

    async def derive(self, io: TableIO) -> None:
        """Count the histogram from the scores (after a bulk fold, which left it out)."""
        names = {"scores": io.ident(SCORES), "buckets": io.ident(BUCKETS)}
        await io.conn.execute(sql.SQL(COUNT_BUCKETS).format(**names))


async def _move_in_sql(io: TableIO, totals: dict[Key, int]) -> None:
    """Add the batch's score changes and move the histogram counts, in the server."""
    if not totals:
        return
    stage = await io.stage(SCORES, [(*key, amount) for key, amount in totals.items()])
    names = {"scores": io.ident(SCORES), "buckets": io.ident(BUCKETS), "stage": stage}
    await io.conn.execute(sql.SQL(MOVE_SCORES).format(**names))
    await io.conn.execute(sql.SQL(DROP_EMPTY_BUCKETS).format(**names))
    await io.conn.execute(sql.SQL("DELETE FROM {}").format(stage))
