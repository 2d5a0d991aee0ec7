"""The projectors, by name. Each owns its tables; none reads another's."""

from __future__ import annotations

from collections.abc import Sequence

from projections.projector import Projector
from projections.projectors.activity import ActivityProjector
from projections.projectors.inventory import InventoryProjector
from projections.projectors.leaderboards import LeaderboardsProjector
from projections.projectors.levels import LevelsProjector
from projections.projectors.moderation import ModerationProjector
from projections.projectors.wallets import WalletsProjector

PROJECTORS: dict[str, Projector] = {
    p.name: p
    for p in (
        WalletsProjector(),
        LevelsProjector(),
        InventoryProjector(),
        LeaderboardsProjector(),
        ModerationProjector(),
        ActivityProjector(),
    )
}


class UnknownProjector(ValueError):
    """A projector name that does not exist."""


def select(names: Sequence[str] | None = None) -> list[Projector]:
    """The projectors named (all when `names` is None or empty), in registry order."""
    if not names:
        return list(PROJECTORS.values())
    unknown = sorted(set(names) - set(PROJECTORS))
    if unknown:
        raise UnknownProjector(
            f"unknown projector(s): {', '.join(unknown)}; known: {', '.join(PROJECTORS)}"
        )
    return [p for name, p in PROJECTORS.items() if name in names]
