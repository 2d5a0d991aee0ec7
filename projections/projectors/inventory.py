"""The inventory projector: item counts (`inventory`) and multipliers in force
(`active_multipliers`)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import events as ev
from ledger.member import item_delta
from projections.projector import Delivered, Overlay, Projector
from projections.tables import Column, Table, cols

INVENTORY = Table(
    "inventory",
    key=(*cols("guild_id", "member_id"), Column("item", "text")),
    values=(Column("quantity", "int8", "set"),),
    kind="state",
)

ACTIVE_MULTIPLIERS = Table(
    "active_multipliers",
    key=cols("guild_id", "member_id"),
    values=(
        Column("item", "text", "set"),
        Column("factor_pct", "int4", "set"),
        Column("games_left", "int4", "set"),
        Column("activated_at", "timestamptz", "set"),
    ),
    kind="state",
)


class InventoryProjector(Projector):
    """Folds item grants and uses in order; a game consumes one use of the active multiplier."""

    name = "inventory"
    handles = frozenset(
        {ev.ItemGranted, ev.JackpotOpened, ev.MultiplierActivated, ev.GamePlayed, ev.Reverted}
    )
    tables = (INVENTORY, ACTIVE_MULTIPLIERS)

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Load the touched counts and multipliers, then fold the batch event by event."""
        items: set[tuple[int, int, str]] = set()
        players: set[tuple[int, int]] = set()
        for d in batch:
            item, count = item_delta(d.event)
            if count:
                items.add((d.guild_id, d.event.member_id, item))
            if isinstance(d.event, ev.GamePlayed | ev.MultiplierActivated):
                players.add((d.guild_id, d.event.member_id))
        await state.load(INVENTORY, items)
        await state.load(ACTIVE_MULTIPLIERS, players)
        for d in batch:
            event = d.event
            member = (d.guild_id, event.member_id)
            item, count = item_delta(event)
            if count:
                key = (*member, item)
                row = state.get(INVENTORY, key)
                quantity = (row[0] if row else 0) + count
                state.put(INVENTORY, key, (quantity,) if quantity else None)
            match event:
                case ev.MultiplierActivated(item=name, factor_pct=factor, games=games, at=at):
                    state.put(ACTIVE_MULTIPLIERS, member, (name, factor, games, at))
                case ev.GamePlayed():
                    active = state.get(ACTIVE_MULTIPLIERS, member)
                    if active is not None:
                        left = active[2] - 1
                        state.put(
                            ACTIVE_MULTIPLIERS,
                            member,
                            (active[0], active[1], left, active[3]) if left > 0 else None,
                        )
