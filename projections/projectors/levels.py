"""The levels projector: XP, the level it gives, messages and voice time (`levels`)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import events as ev
from ledger.levels import level_for_xp
from ledger.member import xp_delta
from projections.projector import Delivered, Overlay, Projector
from projections.tables import Column, Table, cols

LEVELS = Table(
    "levels",
    key=cols("guild_id", "member_id"),
    values=(
        Column("xp", "int8", "set"),
        Column("level", "int4", "set"),
        Column("messages", "int8", "set"),
        Column("voice_seconds", "int8", "set"),
    ),
    kind="state",
)


class LevelsProjector(Projector):
    """Level is a pure function of XP, so rows are read, summed and re-levelled per batch."""

    name = "levels"
    handles = frozenset({ev.XpGranted, ev.GamePlayed, ev.Reverted})
    tables = (LEVELS,)

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Sum XP, messages and voice seconds per member; recompute the level once."""
        sums: dict[tuple[int, int], list[int]] = {}
        for d in batch:
            event = d.event
            xp = xp_delta(event)
            messages = voice = 0
            if isinstance(event, ev.XpGranted):
                if event.source == "message":
                    messages = 1
                elif event.source == "voice":
                    voice = event.seconds
            elif isinstance(event, ev.Reverted) and not xp:
                continue  # an LC- or item-only revert leaves levels alone
            key = (d.guild_id, event.member_id)
            acc = sums.get(key)
            if acc is None:
                sums[key] = [xp, messages, voice]
            else:
                acc[0] += xp
                acc[1] += messages
                acc[2] += voice
        await state.load(LEVELS, sums)
        for key, (xp, messages, voice) in sums.items():
            row = state.get(LEVELS, key)
            if row is not None:
                xp += row[0]
                messages += row[2]
                voice += row[3]
            state.put(LEVELS, key, (xp, level_for_xp(xp), messages, voice))
