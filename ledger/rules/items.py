"""Inventory rules: the item catalogue, granting items, opening jackpots, activating multipliers."""

from __future__ import annotations

import msgspec

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import InvalidInput, NotPermitted, UnknownItem
from ledger.rules.draft import Decision, Draft, check_amount, check_id

MAX_ITEM_GRANT = 1000


class ItemKind(msgspec.Struct, frozen=True):
    """What using an item does: a jackpot pays LC; a multiplier boosts game XP."""

    kind: str  # "jackpot" | "multiplier"
    factor_pct: int = 0


CATALOGUE: dict[str, ItemKind] = {
    "jackpot": ItemKind("jackpot"),
    "x2": ItemKind("multiplier", 200),
    "x3": ItemKind("multiplier", 300),
}
ITEM_SOURCES = frozenset({"admin", "game", "shop", "quest"})


def _item(name: object) -> ItemKind:
    if not isinstance(name, str) or name not in CATALOGUE:
        raise UnknownItem(f"There is no item called {name!r}. Items: {', '.join(CATALOGUE)}.")
    return CATALOGUE[name]


def grant(draft: Draft, c: cmd.GrantItem) -> Decision:
    """Add items to a member's inventory (admin grants need an admin)."""
    check_id(c.member_id, "Member")
    _item(c.item)
    quantity = check_amount(c.quantity, MAX_ITEM_GRANT, "Quantity")
    if c.item_source not in ITEM_SOURCES:
        raise InvalidInput(f"Item source must be one of {', '.join(sorted(ITEM_SOURCES))}.")
    if c.item_source == "admin" and not c.actor.is_admin:
        raise NotPermitted("Only admins can grant items.")
    draft.ensure_joined(c.member_id, c.at)
    draft.add(
        ev.ItemGranted(
            member_id=c.member_id,
            at=c.at,
            item=c.item,
            quantity=quantity,
            source=c.item_source,
            actor_id=c.actor.user_id,
        )
    )
    return draft.decision(value=quantity)


def use(draft: Draft, c: cmd.UseItem) -> Decision:
    """Open a jackpot (recorded roll of the guild's amounts) or activate a multiplier."""
    check_id(c.member_id, "Member")
    kind = _item(c.item)
    state = draft.state(c.member_id)
    if state.items.get(c.item, 0) <= 0:
        raise UnknownItem(f"You have no {c.item}.")
    if kind.kind == "jackpot":
        amounts = draft.config.jackpot_amounts
        amount = amounts[c.entropy % len(amounts)]
        draft.add(ev.JackpotOpened(member_id=c.member_id, at=c.at, item=c.item, amount=amount))
        return draft.decision(value=amount)
    if state.multiplier is not None:
        raise InvalidInput(
            f"Your {state.multiplier.item} multiplier is active for "
            f"{state.multiplier.games_left} more games; use this one after it."
        )
    games = draft.config.multiplier_games
    draft.add(
        ev.MultiplierActivated(
            member_id=c.member_id, at=c.at, item=c.item, factor_pct=kind.factor_pct, games=games
        )
    )
    return draft.decision(value=games)
