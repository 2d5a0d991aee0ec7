"""Leaderboard boards, period keys (UTC) and the score buckets that make ranks cheap.

Period keys are text that sorts by time within a kind: 'all', 'day:2024-05-01',
'week:2024-W18' (ISO week, Monday to Sunday), 'month:2024-05'. An event counts in the periods
containing its `at` (the time the command decided), converted to UTC.

Buckets: see `score_bucket`. They are part of the stored data (leaderboard_buckets), so changing
the function needs a rebuild of the leaderboards projector.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

Board = Literal["xp", "lc"]
PeriodKind = Literal["all", "day", "week", "month"]

BOARDS: tuple[Board, ...] = ("xp", "lc")
PERIOD_KINDS: tuple[PeriodKind, ...] = ("all", "day", "week", "month")
ALL_TIME = "all"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_DAY = timedelta(days=1)


def utc_day(at: datetime) -> int:
    """The UTC calendar day (proleptic ordinal) of an aware datetime."""
    if at.tzinfo is UTC:  # what msgspec decodes a "Z" time to: its own date is the UTC date
        return at.toordinal()
    return _EPOCH_ORDINAL + (at - _EPOCH) // _DAY


@lru_cache(maxsize=4096)
def day_periods(day: int) -> tuple[str, str, str]:
    """The day, week and month period keys of a UTC day ordinal."""
    d = date.fromordinal(day)
    year, week, _ = d.isocalendar()
    return f"day:{d.isoformat()}", f"week:{year}-W{week:02d}", f"month:{d.year}-{d.month:02d}"


def period_key(kind: PeriodKind, when: date | datetime | None = None) -> str:
    """The key of the `kind` period containing `when` (default: now), in UTC."""
    if kind == "all":
        return ALL_TIME
    if when is None:
        when = datetime.now(UTC)
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("period_key needs a timezone-aware datetime (UTC)")
        day = utc_day(when)
    else:
        day = when.toordinal()
    return day_periods(day)[PERIOD_KINDS.index(kind) - 1]


_KEY_PREFIXES = ("day:", "week:", "month:")


def resolve_period(period: str, when: date | datetime | None = None) -> str:
    """A period key from a kind ('all', 'day', 'week', 'month', taken at `when`) or a key."""
    if period in PERIOD_KINDS:
        return period_key(period, when)
    if period.startswith(_KEY_PREFIXES) and len(period) <= 16:
        return period
    raise ValueError(f"unknown period {period!r}: use all, day, week, month or a period key")


# Scores below 2**SIGNIFICANT_BITS have a bucket each; above, a bucket spans the scores sharing
# their top SIGNIFICANT_BITS bits (a relative width under 1/128). So a 63-bit score range needs
# at most ~7,300 buckets, and a bucket never mixes scores more than 0.8% apart.
SIGNIFICANT_BITS = 8
_HALF = 1 << (SIGNIFICANT_BITS - 1)


def score_bucket(score: int) -> int:
    """The histogram bucket of a score: monotone (a higher score never has a lower bucket)."""
    if score < 0:
        return -score_bucket(-score)
    if score < _HALF:
        return score
    shift = score.bit_length() - SIGNIFICANT_BITS
    return shift * _HALF + (score >> shift)


def bucket_top(bucket: int) -> int:
    """The highest score in `bucket`."""
    if bucket < 0:
        return -bucket_floor(-bucket)
    if bucket < 2 * _HALF:
        return bucket
    shift = bucket // _HALF - 1
    mantissa = bucket - shift * _HALF
    return ((mantissa + 1) << shift) - 1


def bucket_floor(bucket: int) -> int:
    """The lowest score in `bucket`."""
    if bucket < 0:
        return -bucket_top(-bucket)
    if bucket < 2 * _HALF:
        return bucket
    shift = bucket // _HALF - 1
    return (bucket - shift * _HALF) << shift
