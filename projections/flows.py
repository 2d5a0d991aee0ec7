"""How an event's LC change splits into flows: earned, minted, burned, received, sent.

The amount itself always comes from `ledger.member.lc_delta`; this only says which kind of
money moved, so that balance = minted - burned + received - sent holds for every member and the
guild's total balance is minted minus burned (transfers cancel out).
"""

from __future__ import annotations

from typing import NamedTuple

from ledger import events as ev
from ledger.member import lc_delta


class Flows(NamedTuple):
    """One event's LC flows for its member (all zero when it moves no LC)."""

    balance: int
    earned: int
    minted: int
    burned: int
    received: int
    sent: int


NO_FLOWS = Flows(0, 0, 0, 0, 0, 0)


def lc_flows(event: ev.Event) -> Flows:
    """Split the event's LC change into flows.

    "Earned" is what the LC leaderboard ranks: every gain except a reverted spend, minus every
    reverted gain (a revert names only a position, so it counts in the period it happens in).
    A game's payout is minted and its bet burned, as recorded.
    """
    delta = lc_delta(event)
    match event:
        case ev.TransferSent(amount=amount):
            return Flows(delta, 0, 0, 0, 0, amount)
        case ev.TransferReceived(amount=amount):
            return Flows(delta, amount, 0, 0, amount, 0)
        case ev.GamePlayed(bet=bet, payout=payout):
            return Flows(delta, max(delta, 0), payout, bet, 0, 0)
        case ev.Reverted():
            return Flows(delta, min(delta, 0), max(delta, 0), max(-delta, 0), 0, 0)
    if delta == 0:
        return NO_FLOWS
    return Flows(delta, max(delta, 0), max(delta, 0), max(-delta, 0), 0, 0)


def lc_earned(event: ev.Event) -> int:
    """`lc_flows(event).earned`, without building the other flows (leaderboards' hot path)."""
    delta = lc_delta(event)
    if type(event) is ev.Reverted:
        return min(delta, 0)
    return max(delta, 0)
