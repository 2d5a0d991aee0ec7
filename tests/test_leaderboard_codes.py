"""The integer codes the leaderboard tables store for boards and periods (projections/periods.py,
sql/016): one code per key and back, in time order within a kind, and the migration converts
text keys to exactly the codes the projector writes."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.migrations import migrations_dir
from projections.periods import (
    ALL_TIME,
    BOARD_CODES,
    PERIOD_KINDS,
    board_code,
    period_code,
    period_from_code,
    period_key,
    resolve_period,
)

days = st.dates(min_value=date(1, 1, 8), max_value=date(9999, 12, 24))


@given(days, st.sampled_from(PERIOD_KINDS))
def test_a_period_key_and_its_code_map_one_to_one(day: date, kind: str) -> None:
    key = period_key(kind, day)  # type: ignore[arg-type]
    assert period_from_code(period_code(key)) == key
    assert period_code(key) // 100_000_000 == PERIOD_KINDS.index(kind)  # type: ignore[arg-type]


@given(days, st.integers(1, 400), st.sampled_from(PERIOD_KINDS))
def test_codes_sort_by_time_within_a_kind(day: date, later_by: int, kind: str) -> None:
    later = min(day + timedelta(days=later_by), date(9999, 12, 31))
    first, second = (period_code(period_key(kind, d)) for d in (day, later))  # type: ignore[arg-type]
    assert first <= second
    if kind == "day" and later != day:
        assert first < second


@pytest.mark.parametrize(
    "key",
    ["day:2024-02-30", "day:2024-5-01", "day:2024-W18-1", "week:2021-W53", "week:2024-18",
     "week:2024-W1x", "month:2024-13", "month:2024-1", "season", "day:", "all:"],
)  # fmt: skip
def test_malformed_period_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        resolve_period(key)


def test_board_codes() -> None:
    assert {board: board_code(board) for board in BOARD_CODES} == {"xp": 1, "lc": 2}
    with pytest.raises(ValueError):
        board_code("gold")


def test_the_migration_converts_text_keys_to_the_projectors_codes(db_url: str) -> None:
    """Tables of the old shape (012) in a scratch schema, converted by 016."""
    folder = migrations_dir()
    keys = [ALL_TIME, "day:2024-12-30", "day:0001-01-01", "week:2025-W01", "week:2020-W53"]
    keys += ["month:2024-12", "month:9999-12"]
    rows = [(7, board, key, n) for board in BOARD_CODES for n, key in enumerate(keys)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA old_shape")
        conn.execute("SET search_path = old_shape")
        conn.execute((folder / "012_leaderboards.sql").read_bytes())
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO leaderboard_scores VALUES (%s, %s, %s, %s, 10)", rows)
            cur.executemany("INSERT INTO leaderboard_buckets VALUES (%s, %s, %s, %s, 1)", rows)
        conn.execute((folder / "016_leaderboard_codes.sql").read_bytes())
        for table in ("leaderboard_scores", "leaderboard_buckets"):
            converted = conn.execute(
                f"SELECT guild_id, board, period, {'member_id' if 'scores' in table else 'bucket'}"
                f" FROM {table}"
            ).fetchall()
            expected = [(g, board_code(b), period_code(k), n) for g, b, k, n in rows]
            assert sorted(converted) == sorted(expected)
