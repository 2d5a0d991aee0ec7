"""The activity projector: per-member counters for quests and achievements
(`activity_counters`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ledger import events as ev
from projections.projector import Delivered, Overlay, Projector
from projections.tables import Column, Table, cols

COUNTERS = (
    "messages",
    "voice_ticks",
    "voice_seconds",
    "reactions_received",
    "games_played",
    "games_won",
    "dailies_claimed",
    "best_daily_streak",
    "invites_made",
    "transfers_sent",
    "transfers_received",
    "lc_sent",
    "lc_received",
    "jackpots_opened",
    "multipliers_activated",
    "items_received",
    "warnings_received",
)
_I = {name: i for i, name in enumerate(COUNTERS)}
_BEST_STREAK = _I["best_daily_streak"]
_MESSAGES = _I["messages"]
_MESSAGE = ((_MESSAGES, 1),)
_REACTION = ((_I["reactions_received"], 1),)

ACTIVITY = Table(
    "activity_counters",
    key=cols("guild_id", "member_id"),
    values=(
        *(Column(n, "int8", "max" if n == "best_daily_streak" else "add") for n in COUNTERS),
        Column("first_active_at", "timestamptz", "min"),
        Column("last_active_at", "timestamptz", "max"),
    ),
    kind="counter",
)


def _increments(event: ev.Event) -> tuple[tuple[int, int], ...]:
    """(counter index, amount) pairs an event adds (the best streak is a maximum)."""
    if type(event) is ev.XpGranted:  # most of the log: skip the match below
        source = event.source
        if source == "message":
            return _MESSAGE
        if source == "reaction":
            return _REACTION
        if source == "voice":
            return ((_I["voice_ticks"], 1), (_I["voice_seconds"], event.seconds))
        return ()
    match event:
        case ev.GamePlayed(won=won):
            return ((_I["games_played"], 1), (_I["games_won"], int(won)))
        case ev.DailyClaimed(streak=streak):
            return ((_I["dailies_claimed"], 1), (_BEST_STREAK, streak))
        case ev.InviteRewarded(side="inviter"):
            return ((_I["invites_made"], 1),)
        case ev.TransferSent(amount=amount):
            return ((_I["transfers_sent"], 1), (_I["lc_sent"], amount))
        case ev.TransferReceived(amount=amount):
            return ((_I["transfers_received"], 1), (_I["lc_received"], amount))
        case ev.JackpotOpened():
            return ((_I["jackpots_opened"], 1),)
        case ev.MultiplierActivated():
            return ((_I["multipliers_activated"], 1),)
        case ev.ItemGranted(quantity=quantity):
            return ((_I["items_received"], quantity),)
        case ev.WarningIssued():
            return ((_I["warnings_received"], 1),)
    return ()


class ActivityProjector(Projector):
    """Counters are merged without reading: sums per member per batch, added on write."""

    name = "activity"
    reads_tables = False  # counters only
    handles = frozenset(
        {
            ev.MemberJoined,
            ev.XpGranted,
            ev.GamePlayed,
            ev.DailyClaimed,
            ev.InviteRewarded,
            ev.TransferSent,
            ev.TransferReceived,
            ev.JackpotOpened,
            ev.MultiplierActivated,
            ev.ItemGranted,
            ev.WarningIssued,
        }
    )
    tables = (ACTIVITY,)

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Count each member's activity over the batch, then merge it into the counters."""
        counts: dict[tuple[int, int], list[int]] = {}
        spans: dict[tuple[int, int], list[datetime]] = {}
        for d in batch:
            event = d.event
            at = event.at
            key = (d.guild_id, event.member_id)
            acc = counts.get(key)
            if acc is None:
                acc = counts[key] = [0] * len(COUNTERS)
                spans[key] = [at, at]
            else:
                span = spans[key]
                if at < span[0]:
                    span[0] = at
                elif at > span[1]:
                    span[1] = at
            if type(event) is ev.XpGranted and event.source == "message":  # most of a log
                acc[_MESSAGES] += 1
                continue
            for index, amount in _increments(event):
                if index == _BEST_STREAK:
                    acc[index] = max(acc[index], amount)
                else:
                    acc[index] += amount
        for key, values in counts.items():
            state.add(ACTIVITY, key, [*values, *spans[key]])
