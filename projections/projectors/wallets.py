"""The wallets projector: each member's LC balance and where it came from (`balances`)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import events as ev
from projections.flows import lc_flows
from projections.projector import Delivered, Overlay, Projector
from projections.tables import Table, cols

BALANCES = Table(
    "balances",
    key=cols("guild_id", "member_id"),
    values=cols("balance", "earned", "minted", "burned", "received", "sent"),
    kind="counter",
)

LC_EVENTS: frozenset[type[ev.Event]] = frozenset(
    {
        ev.MemberJoined,
        ev.LcMinted,
        ev.LcBurned,
        ev.DailyClaimed,
        ev.InviteRewarded,
        ev.TransferSent,
        ev.TransferReceived,
        ev.GamePlayed,
        ev.JackpotOpened,
        ev.Reverted,
    }
)


class WalletsProjector(Projector):
    """Balances are counters: a batch's flows are summed per member and merged by addition."""

    name = "wallets"
    handles = LC_EVENTS
    reads_tables = False  # balances are counters: every event adds
    tables = (BALANCES,)

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Sum each member's flows over the batch, then merge them into `balances`."""
        sums: dict[tuple[int, int], list[int]] = {}
        for d in batch:
            balance, earned, minted, burned, received, sent = lc_flows(d.event)
            key = (d.guild_id, d.event.member_id)
            acc = sums.get(key)
            if acc is None:
                sums[key] = [balance, earned, minted, burned, received, sent]
            else:
                acc[0] += balance
                acc[1] += earned
                acc[2] += minted
                acc[3] += burned
                acc[4] += received
                acc[5] += sent
        for key, values in sums.items():
            state.add(BALANCES, key, values)
