"""Pure parts of the projections: table specs against the migrations, LC flows, registry."""

from __future__ import annotations

import asyncio
import gc
from datetime import UTC, datetime

import pytest

from ledger import events as ev
from ledger.member import lc_delta
from projections.flows import lc_earned, lc_flows
from projections.projector import Overlay, collector_paused
from projections.projectors import PROJECTORS, UnknownProjector, select
from projections.projectors.leaderboards import BUCKETS, SCORES
from projections.projectors.wallets import LC_EVENTS
from tests.fix_db import LedgerEnv

AT = datetime(2024, 1, 1, tzinfo=UTC)
PG_TYPES = {
    "int8": "bigint",
    "int4": "integer",
    "text": "text",
    "timestamptz": "timestamp with time zone",
}

SAMPLES: list[ev.Event] = [
    ev.MemberJoined(member_id=1, at=AT, starting_balance=25),
    ev.LcMinted(member_id=1, at=AT, amount=10, reason="admin"),
    ev.LcBurned(member_id=1, at=AT, amount=4, reason="admin"),
    ev.DailyClaimed(member_id=1, at=AT, day=1, streak=2, amount=60),
    ev.InviteRewarded(member_id=1, at=AT, other_id=2, side="inviter", amount=100),
    ev.TransferSent(member_id=1, at=AT, to_id=2, amount=7),
    ev.TransferReceived(member_id=2, at=AT, from_id=1, amount=7),
    ev.GamePlayed(
        member_id=1,
        at=AT,
        game="dice",
        won=True,
        base_xp=15,
        multiplier_pct=100,
        xp=15,
        bet=5,
        payout=12,
    ),
    ev.GamePlayed(
        member_id=1,
        at=AT,
        game="dice",
        won=False,
        base_xp=5,
        multiplier_pct=100,
        xp=5,
        bet=5,
        payout=0,
    ),
    ev.JackpotOpened(member_id=1, at=AT, item="jackpot", amount=50),
    ev.Reverted(member_id=1, at=AT, position=3, lc_delta=-10, xp_delta=0),
    ev.Reverted(member_id=1, at=AT, position=4, lc_delta=4, xp_delta=-20),
    ev.XpGranted(member_id=1, at=AT, source="message", base=20, multiplier_pct=100, xp=20),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: ev.event_type(e))
def test_lc_flows_split_the_ledgers_own_delta(event: ev.Event) -> None:
    flows = lc_flows(event)
    assert flows.balance == lc_delta(event)
    assert flows.balance == flows.minted - flows.burned + flows.received - flows.sent
    assert flows.earned == lc_earned(event)
    assert min(flows.minted, flows.burned, flows.received, flows.sent) >= 0


def test_table_specs_match_the_migrations(env: LedgerEnv) -> None:
    for projector in PROJECTORS.values():
        for table in projector.tables:
            columns = env.sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table.name,),
            )
            assert columns == [(c.name, PG_TYPES[c.pg_type]) for c in table.columns], table.name
            key = env.sql(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (table.name,),
            )
            assert {k for (k,) in key} == {c.name for c in table.key}, table.name
            assert table.key[0].name == "guild_id"  # guild-first keys (Citus)


def test_every_projector_owns_its_own_tables() -> None:
    owners: dict[str, str] = {}
    for name, projector in PROJECTORS.items():
        assert projector.handles, name
        for table in projector.tables:
            assert owners.setdefault(table.name, name) == name
    assert select(["levels", "wallets"]) == [PROJECTORS["wallets"], PROJECTORS["levels"]]
    with pytest.raises(UnknownProjector):
        select(["nope"])


def test_overlay_size_counts_a_delta_as_half_a_row() -> None:
    # The held-backlog bound (engine.MAX_HELD_ROWS) is a memory bound: a pending delta is a key
    # and an int, about half of a loaded row (values plus the base it is compared with).
    state = Overlay((SCORES, BUCKETS), None, live=True)
    state.add_deltas(SCORES, {(1, "xp", "all", member): 5 for member in range(10)})
    state.add_deltas(SCORES, {(1, "xp", "all", 0): 5})  # the same row again: still one delta
    assert state.size() == 5
    assert state.take_deltas(SCORES)[(1, "xp", "all", 0)] == 10
    state.add_deltas(SCORES, {(1, "xp", "all", member): 5 for member in range(10)})
    state.put(SCORES, (1, "xp", "all", 99), (7,))
    state.add(BUCKETS, (1, "xp", "all", 7), (1,))
    assert state.size() == 7


def test_an_overlay_that_may_not_load_refuses_to() -> None:
    # The engine's live overlays for projectors declaring `reads_tables = False`: their held
    # stretches are written behind, so a load could read rows not written yet.
    state = Overlay((SCORES, BUCKETS), None, live=True)
    state.may_load = False
    with pytest.raises(RuntimeError, match="reads_tables"):
        asyncio.run(state.load(SCORES, [(1, 1, 0, 5)]))


def test_the_collector_pause_leaves_the_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), collector_paused():
        assert not gc.isenabled()
        _ = 1 / 0
    assert gc.isenabled()
    # Two folds interleaving (lanes): enabled again once both are done, whatever the order.
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()  # an application that runs without the collector keeps it off
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_xp_grants_never_earn_lc_as_the_leaderboards_fast_path_assumes() -> None:
    grant = ev.XpGranted(member_id=1, at=AT, source="message", base=15, multiplier_pct=100, xp=15)
    assert ev.XpGranted not in LC_EVENTS and lc_earned(grant) == 0
