"""The MEE6-compatible level curve: XP for level L to L+1 is 5L² + 50L + 100.

Level is a pure, monotone function of total XP, so levels never need to be stored as facts;
`LevelChanged` events only make the change visible (announcements, role rewards).
"""

from __future__ import annotations

from bisect import bisect_right

MAX_LEVEL = 1000


def xp_to_next(level: int) -> int:
    """XP needed to go from `level` to `level + 1`."""
    return 5 * level * level + 50 * level + 100


def _cumulative() -> list[int]:
    totals = [0]
    for level in range(MAX_LEVEL):
        totals.append(totals[-1] + xp_to_next(level))
    return totals


# _TOTALS[L] is the total XP at which level L starts.
_TOTALS = _cumulative()


def total_xp_for_level(level: int) -> int:
    """Total XP at which `level` is reached."""
    if level < 0 or level > MAX_LEVEL:
        raise ValueError(f"level must be within 0..{MAX_LEVEL}")
    return _TOTALS[level]


def level_for_xp(xp: int) -> int:
    """The level a member with `xp` total XP has (0 for xp <= 0)."""
    if xp <= 0:
        return 0
    return min(bisect_right(_TOTALS, xp) - 1, MAX_LEVEL)


def progress(xp: int) -> tuple[int, int, int]:
    """(level, xp into the current level, xp the current level needs)."""
    level = level_for_xp(xp)
    if level >= MAX_LEVEL:
        return level, 0, 0
    return level, max(xp, 0) - _TOTALS[level], xp_to_next(level)
