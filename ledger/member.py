"""A member's write-side state and `evolve`, the one fold of the member stream.

The same `evolve` serves commands (via the stored state row), tests and audits. It is pure:
no clock, no randomness; every decision is read from the event.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger import events as ev
from ledger.levels import level_for_xp

# How many recent messages' reaction counts a member's state remembers (the cap's window).
REACTION_WINDOW = 64


class ActiveMultiplier(msgspec.Struct, frozen=True):
    """An item multiplier in force for the next `games_left` games."""

    item: str
    factor_pct: int
    games_left: int


class ActiveWarning(msgspec.Struct, frozen=True):
    """A warning that has been neither pardoned nor expired."""

    warning_id: str
    expires_at: datetime


class MemberState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Everything a command needs to decide for one member, kept as a state row.

    The stored row leaves out the fields at their defaults (D25): every append writes and the
    server parses one row per touched member, and most members use few of these fields. The
    four headline figures have no default, so they are always in the row, for SQL readers.
    """

    joined: bool
    balance: int
    xp: int
    level: int
    last_message_xp_at: datetime | None = None
    voice_seconds: int = 0
    imported_xp: int = 0
    daily_day: int = 0
    daily_streak: int = 0
    invited: bool = False
    items: dict[str, int] = {}
    multiplier: ActiveMultiplier | None = None
    reactions: dict[int, int] = {}
    warnings: tuple[ActiveWarning, ...] = ()
    reverted: frozenset[int] = frozenset()


NEW_MEMBER = MemberState(joined=False, balance=0, xp=0, level=0)


def lc_delta(event: ev.Event) -> int:
    """The change an event makes to its member's LC balance."""
    match event:
        case ev.MemberJoined(starting_balance=amount):
            return amount
        case ev.LcMinted(amount=amount) | ev.DailyClaimed(amount=amount):
            return amount
        case ev.InviteRewarded(amount=amount) | ev.JackpotOpened(amount=amount):
            return amount
        case ev.TransferReceived(amount=amount):
            return amount
        case ev.LcBurned(amount=amount) | ev.TransferSent(amount=amount):
            return -amount
        case ev.GamePlayed(bet=bet, payout=payout):
            return payout - bet
        case ev.Reverted(lc_delta=delta):
            return delta
    return 0


def xp_delta(event: ev.Event) -> int:
    """The change an event makes to its member's XP."""
    # isinstance, not `match`: called for every event by two projectors, and a class pattern
    # costs about twice as much.
    if isinstance(event, (ev.XpGranted, ev.GamePlayed)):
        return event.xp
    if isinstance(event, ev.Reverted):
        return event.xp_delta
    return 0


def item_delta(event: ev.Event) -> tuple[str, int]:
    """The (item, change in count) an event makes to its member's inventory."""
    match event:
        case ev.ItemGranted(item=item, quantity=quantity):
            return item, quantity
        case ev.JackpotOpened(item=item) | ev.MultiplierActivated(item=item):
            return item, -1
        case ev.Reverted(item=item, item_delta=delta) if item:
            return item, delta
    return "", 0


def _with_item(items: dict[str, int], item: str, delta: int) -> dict[str, int]:
    updated = dict(items)
    count = updated.get(item, 0) + delta
    if count:
        updated[item] = count
    else:
        updated.pop(item, None)
    return updated


def evolve(state: MemberState, event: ev.Event) -> MemberState:
    """The member's state after `event`."""
    changes: dict[str, object] = {}
    lc = lc_delta(event)
    if lc:
        changes["balance"] = state.balance + lc
    xp = xp_delta(event)
    if xp:
        changes["xp"] = state.xp + xp
        changes["level"] = level_for_xp(state.xp + xp)
    item, count = item_delta(event)
    if count:
        changes["items"] = _with_item(state.items, item, count)

    match event:
        case ev.MemberJoined():
            changes["joined"] = True
        case ev.XpGranted(source="message", at=at):
            changes["last_message_xp_at"] = at
        case ev.XpGranted(source="import", xp=imported):
            changes["imported_xp"] = state.imported_xp + imported
        case ev.XpGranted(source="voice", seconds=seconds):
            changes["voice_seconds"] = state.voice_seconds + seconds
        case ev.XpGranted(source="reaction", ref_id=message_id):
            reactions = dict(state.reactions)
            reactions[message_id] = reactions.get(message_id, 0) + 1
            while len(reactions) > REACTION_WINDOW:
                del reactions[min(reactions)]
            changes["reactions"] = reactions
        case ev.DailyClaimed(day=day, streak=streak):
            changes["daily_day"] = day
            changes["daily_streak"] = streak
        case ev.InviteRewarded(side="invitee"):
            changes["invited"] = True
        case ev.MultiplierActivated(item=item_name, factor_pct=factor, games=games):
            changes["multiplier"] = ActiveMultiplier(item_name, factor, games)
        case ev.GamePlayed() if state.multiplier is not None:
            left = state.multiplier.games_left - 1
            changes["multiplier"] = (
                msgspec.structs.replace(state.multiplier, games_left=left) if left > 0 else None
            )
        case ev.WarningIssued(warning_id=wid, expires_at=expires_at):
            changes["warnings"] = (*state.warnings, ActiveWarning(wid, expires_at))
        case ev.WarningPardoned(warning_id=wid) | ev.WarningExpired(warning_id=wid):
            changes["warnings"] = tuple(w for w in state.warnings if w.warning_id != wid)
        case ev.Reverted(position=position):
            changes["reverted"] = state.reverted | {position}
    if not changes:
        return state
    return msgspec.structs.replace(state, **changes)


def fold(events: list[ev.AnyEvent], state: MemberState = NEW_MEMBER) -> MemberState:
    """Fold a member's events, oldest first."""
    for event in events:
        state = evolve(state, event)
    return state


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(MemberState)


def encode_state(state: MemberState) -> bytes:
    """The stored form of a member's state row."""
    return _state_encoder.encode(state)


def decode_state(data: bytes | str) -> MemberState:
    """Decode a stored member state row."""
    return _state_decoder.decode(data)
