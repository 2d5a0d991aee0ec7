"""Leaderboards: ranks against a brute-force ranking, pages, periods, the bucket function."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import events as ev
from projections import catch_up
from projections.leaderboard import MAX_PAGE_SIZE, count_above, leaderboard, rank
from projections.periods import (
    BOARD_CODES,
    bucket_floor,
    bucket_top,
    period_from_code,
    period_key,
    resolve_period,
    score_bucket,
)
from tests.fix_db import LedgerEnv
from tests.fix_projections import assert_histogram_matches_scores

G = 77
DAY1 = datetime(2024, 12, 29, 10, tzinfo=UTC)  # a Sunday: ISO week 2024-W52
DAY2 = datetime(2024, 12, 30, 10, tzinfo=UTC)  # a Monday: ISO week 2025-W01, still December


def _xp_score(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.35:
        return 25  # a crowd of ties in an exact bucket
    if roll < 0.55:
        return rng.randint(1, 300)
    if roll < 0.85:
        return (
            rng.choice([4_096, 100_000, 100_001])
            if rng.random() < 0.2
            else rng.randint(300, 200_000)
        )
    return rng.randint(200_000, 2_000_000_000)


def _load_synthetic_guild(env: LedgerEnv, members: int, seed: int) -> None:
    """XP and LC events written straight to the log: ties, huge scores, negative day scores."""
    rng = random.Random(seed)
    rows = []
    for member in range(1, members + 1):
        events: list[ev.Event] = [
            ev.MemberJoined(member_id=member, at=DAY1, starting_balance=rng.choice([25, 25, 40]))
        ]
        for _ in range(rng.randint(1, 2)):
            xp = _xp_score(rng)
            events.append(
                ev.XpGranted(
                    member_id=member,
                    at=rng.choice([DAY1, DAY2]),
                    source="admin",
                    base=xp,
                    multiplier_pct=100,
                    xp=xp,
                )
            )
        if rng.random() < 0.05:  # a revert on day 2 alone: negative scores on that day's board
            events.append(
                ev.Reverted(
                    member_id=member, at=DAY2, position=1, lc_delta=0, xp_delta=-rng.randint(1, 500)
                )
            )
        for version, event in enumerate(events, start=1):
            rows.append((G, member, version, ev.event_type(event), ev.encode(event).decode()))
    with (
        psycopg.connect(env.url) as conn,
        conn.cursor().copy(
            "COPY events (guild_id, stream, version, type, data, meta) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row((*row, '{"command_id": "synthetic"}'))
    env.run(catch_up(env.store.pool, ["leaderboards"], batch_size=1500))


def _boards(env: LedgerEnv) -> dict[tuple[str, str], dict[int, int]]:
    boards: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    names = {code: board for board, code in BOARD_CODES.items()}
    for board, period, member, score in env.sql(
        "SELECT board, period, member_id, score FROM leaderboard_scores WHERE guild_id = %s", (G,)
    ):
        boards[(names[board], period_from_code(period))][member] = score
    return boards


def test_ranks_match_a_brute_force_ranking(env: LedgerEnv) -> None:
    _load_synthetic_guild(env, members=2500, seed=3)
    assert_histogram_matches_scores(env)
    pool = env.store.pool
    boards = _boards(env)
    assert set(boards) >= {
        ("xp", "all"),
        ("xp", "day:2024-12-30"),
        ("xp", "week:2025-W01"),
        ("xp", "month:2024-12"),
        ("lc", "all"),
    }
    assert min(boards[("xp", "day:2024-12-30")].values()) < 0
    rng = random.Random(5)

    async def check(board: str, period: str, scores: dict[int, int]) -> None:
        ordered = sorted(scores.values(), reverse=True)
        above = {s: sum(1 for x in ordered if x > s) for s in set(ordered)}
        async with pool.connection() as conn:
            counted, members = await count_above(conn, G, board, period, sorted(above))
        assert counted == above and members == len(scores)
        sample = rng.sample(sorted(scores), min(60, len(scores)))
        sample += [max(scores, key=scores.__getitem__), min(scores, key=scores.__getitem__)]
        for member in sample:
            found = await rank(pool, G, member, board, period)  # type: ignore[arg-type]
            assert found is not None
            assert (found.score, found.rank, found.members) == (
                scores[member],
                above[scores[member]] + 1,
                len(scores),
            )

    async def check_all() -> None:
        for (board, period), scores in boards.items():
            await check(board, period, scores)

    env.run(check_all())


def test_pages_walk_the_whole_board_in_order(env: LedgerEnv) -> None:
    _load_synthetic_guild(env, members=700, seed=4)
    pool = env.store.pool
    scores = _boards(env)[("xp", "all")]
    expected = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    ranks = {s: 1 + sum(1 for x in scores.values() if x > s) for s in set(scores.values())}

    async def walk(limit: int) -> list[tuple[int, int, int]]:
        got: list[tuple[int, int, int]] = []
        after = None
        while True:
            page = await leaderboard(pool, G, "xp", "all", limit=limit, after=after)
            assert page.members == len(scores)
            got += [(e.rank, e.member_id, e.score) for e in page.entries]
            if page.next_after is None:
                return got
            after = page.next_after

    for limit in (1, 10, 33, MAX_PAGE_SIZE):
        assert env.run(walk(limit)) == [(ranks[s], m, s) for m, s in expected]
    page = env.run(leaderboard(pool, G, "xp", "all", limit=10, offset=40))
    assert [(e.rank, e.member_id) for e in page.entries] == [
        (ranks[s], m) for m, s in expected[40:50]
    ]
    top = env.run(leaderboard(pool, G, "xp", "all"))
    assert [e.member_id for e in top.entries] == [m for m, _ in expected[:10]]
    assert top.entries[0].rank == 1


def test_periods_are_kept_and_looked_up_by_time(env: LedgerEnv) -> None:
    _load_synthetic_guild(env, members=50, seed=6)
    pool = env.store.pool
    day1 = env.run(leaderboard(pool, G, "xp", "day", DAY1, limit=100))
    day2 = env.run(leaderboard(pool, G, "xp", "day", DAY2.date(), limit=100))
    week = env.run(leaderboard(pool, G, "xp", "week", DAY2, limit=100))
    month = env.run(leaderboard(pool, G, "xp", "month", DAY1, limit=100))
    assert (day1.period, day2.period) == ("day:2024-12-29", "day:2024-12-30")
    assert (week.period, month.period) == ("week:2025-W01", "month:2024-12")
    totals: dict[int, int] = defaultdict(int)
    for page in (day1, day2):
        for e in page.entries:
            totals[e.member_id] += e.score
    assert totals == {e.member_id: e.score for e in month.entries}
    assert {e.member_id: e.score for e in week.entries} == {
        e.member_id: e.score for e in day2.entries
    }
    lc = env.run(leaderboard(pool, G, "lc", "all", limit=100))
    assert {e.score for e in lc.entries} <= {25, 40}
    empty = env.run(leaderboard(pool, G, "xp", "day:2020-01-01"))
    assert empty.entries == [] and empty.members == 0


def test_period_keys() -> None:
    assert period_key("all", DAY1) == "all"
    assert period_key("day", DAY1) == "day:2024-12-29"
    assert period_key("week", DAY1) == "week:2024-W52"
    assert period_key("week", DAY2) == "week:2025-W01"
    assert period_key("month", DAY2) == "month:2024-12"
    late_evening_east = datetime(2024, 4, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert period_key("day", late_evening_east) == "day:2024-03-31"  # UTC decides
    assert period_key("day", date(2024, 2, 29)) == "day:2024-02-29"
    assert resolve_period("month:2024-02") == "month:2024-02"
    with pytest.raises(ValueError):
        resolve_period("season")
    with pytest.raises(ValueError):
        period_key("day", datetime(2024, 1, 1))  # naive times are refused


@given(st.integers(-(2**63) + 1, 2**63 - 1))
def test_score_buckets_are_monotone_and_bounded(score: int) -> None:
    bucket = score_bucket(score)
    assert bucket_floor(bucket) <= score <= bucket_top(bucket)
    assert score_bucket(bucket_floor(bucket)) == bucket == score_bucket(bucket_top(bucket))
    if score < 2**63 - 1:
        assert score_bucket(score + 1) in (bucket, bucket + 1)
        assert score_bucket(score + 1) == bucket + 1 or score + 1 <= bucket_top(bucket)
    if abs(score) >= 256:  # a bucket spans less than 1/128 of its scores' size
        assert (bucket_top(bucket) - bucket_floor(bucket)) * 128 < abs(score)
    assert abs(bucket) < 7400


def test_the_sql_bucket_function_equals_score_bucket(env: LedgerEnv) -> None:
    # every power of two and its neighbours, both signs, and a spread of random scores
    edges = {s * (2**k + d) for k in range(63) for d in (-1, 0, 1) for s in (1, -1)}
    rng = random.Random(13)
    scores = sorted(
        {x for x in edges if abs(x) < 2**63}
        | {rng.randrange(-(2**62), 2**62) for _ in range(5_000)}
    )
    rows = env.sql(
        "SELECT s, ledger_score_bucket(s) FROM unnest(%s::int8[]) AS s ORDER BY s", (scores,)
    )
    assert [bucket for _, bucket in rows] == [score_bucket(s) for s in scores]
