"""The read API against the fold of each member's stream."""

from __future__ import annotations

from collections import Counter

from ledger import events as ev
from ledger.levels import progress
from projections import queries
from projections.leaderboard import rank
from tests.fix_db import LedgerEnv
from tests.fix_projections import G, member_states, project


def test_member_figures_equal_the_fold(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    pool = env.store.pool
    xp_ranking = sorted((s.xp for (g, _), s in member_states(env).items() if g == G), reverse=True)
    for (guild, member), state in member_states(env).items():
        balance = env.run(queries.balance(pool, guild, member))
        assert balance is not None and balance.balance == state.balance
        assert balance.balance == balance.minted - balance.burned + balance.received - balance.sent
        profile = env.run(queries.profile(pool, guild, member))
        if state.xp:
            assert profile is not None
            level, into, needed = progress(state.xp)
            assert (profile.xp, profile.level, profile.xp_into_level) == (state.xp, level, into)
            assert profile.xp_for_level == needed
            assert profile.xp_to_next_level == needed - into
            assert profile.rank == 1 + sum(1 for x in xp_ranking if x > state.xp)
        inventory = env.run(queries.inventory(pool, guild, member))
        assert {i.item: i.quantity for i in inventory.items} == state.items
        if state.multiplier is None:
            assert inventory.multiplier is None
        else:
            assert inventory.multiplier is not None
            assert inventory.multiplier.games_left == state.multiplier.games_left
        active = env.run(queries.warnings(pool, guild, member, "active"))
        assert {w.warning_id for w in active} == {w.warning_id for w in state.warnings}


def test_warning_states_and_moderation_log(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    pool = env.store.pool
    by_type = Counter(t for (t,) in env.sql("SELECT type FROM events WHERE type LIKE 'warning%%'"))
    statuses: Counter[str] = Counter()
    for (member,) in env.sql("SELECT DISTINCT stream FROM events WHERE stream <> 0"):
        for warning in env.run(queries.warnings(pool, G, member)):
            statuses[warning.status] += 1
            if warning.status == "pardoned":
                assert warning.closed_by is not None and warning.closed_at is not None
    assert statuses["pardoned"] == by_type["warning_pardoned"] > 0
    assert statuses["expired"] == by_type["warning_expired"] > 0
    assert sum(statuses.values()) == by_type["warning_issued"]
    # The whole trail, newest first, page by page.
    entries, before = [], None
    while True:
        page = env.run(queries.moderation_log(pool, G, limit=4, before=before))
        entries += page
        if len(page) < 4:
            break
        before = page[-1].position
    expected = env.sql(
        "SELECT position FROM events WHERE type IN ('warning_issued', 'warning_pardoned', "
        "'warning_expired', 'threshold_reached') ORDER BY position DESC"
    )
    assert [e.position for e in entries] == [p for (p,) in expected]
    member = entries[0].member_id
    mine = env.run(queries.moderation_log(pool, G, member, limit=100))
    assert mine and all(e.member_id == member for e in mine)


def test_history_pages_walk_the_stream_newest_first(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    pool = env.store.pool
    for member in (1, 2, 3):
        seen, before = [], None
        while True:
            page = env.run(queries.history(pool, G, member, limit=7, before=before))
            seen += page.entries
            if page.next_before is None:
                break
            before = page.next_before
        expected = env.sql(
            "SELECT position FROM events WHERE guild_id = %s AND stream = %s "
            "ORDER BY position DESC",
            (G, member),
        )
        assert [e.position for e in seen] == [p for (p,) in expected]
        assert sum(e.lc_delta for e in seen) == member_states(env)[(G, member)].balance
        assert all(e.command_id for e in seen)


def test_activity_counters_and_economy(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    pool = env.store.pool
    rows = env.sql("SELECT stream, type, schema_version, data::text FROM events WHERE stream <> 0")
    messages: Counter[int] = Counter()
    games: Counter[int] = Counter()
    for stream, type_name, schema, data in rows:
        event = ev.decode(data, type_name, schema)
        if isinstance(event, ev.XpGranted) and event.source == "message":
            messages[stream] += 1
        if isinstance(event, ev.GamePlayed):
            games[stream] += 1
    for member in {s for s, *_ in rows}:
        activity = env.run(queries.activity(pool, G, member))
        assert activity is not None
        assert activity.counters["messages"] == messages[member]
        assert activity.counters["games_played"] == games[member]
        assert activity.first_active_at <= activity.last_active_at
    economy = env.run(queries.economy(pool, G))
    states = member_states(env)
    assert economy.total_balance == sum(s.balance for s in states.values())
    assert economy.total_balance == economy.minted - economy.burned  # transfers cancel out
    assert economy.wallets == len(states)


def test_unknown_member_reads(env: LedgerEnv) -> None:
    pool = env.store.pool
    assert env.run(queries.balance(pool, G, 5)) is None
    assert env.run(queries.profile(pool, G, 5)) is None
    assert env.run(queries.activity(pool, G, 5)) is None
    assert env.run(queries.inventory(pool, G, 5)).items == []
    assert env.run(queries.warnings(pool, G, 5)) == []
    assert env.run(queries.history(pool, G, 5)).entries == []
    assert env.run(rank(pool, G, 5)) is None
