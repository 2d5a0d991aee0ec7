"""Verify catches hand edits of read tables; status reports lag and what holds it back."""

from __future__ import annotations

import msgspec
import psycopg

from ledger import commands as cmd
from projections import catch_up, status, verify
from tests.fix_db import LedgerEnv
from tests.fix_projections import G, assert_tables_equal_fold, project


def test_verify_reports_a_row_altered_by_hand(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    clean = env.run(verify(env.store.pool))
    assert clean.ok
    member, balance = env.sql("SELECT member_id, balance FROM balances ORDER BY member_id LIMIT 1")[
        0
    ]
    env.sql("UPDATE balances SET balance = balance + 1 WHERE member_id = %s", (member,))
    env.sql("DELETE FROM levels WHERE member_id = %s", (member,))
    env.sql("INSERT INTO inventory VALUES (%s, 999, 'jackpot', 4)", (G,))

    report = env.run(verify(env.store.pool))
    assert not report.ok
    bad = {t.table: t for t in report.tables if not t.ok}
    assert set(bad) == {"balances", "levels", "inventory"}
    (diff,) = bad["balances"].differences
    assert diff.key == {"guild_id": G, "member_id": member}
    assert diff.expected is not None and diff.actual is not None
    assert diff.expected["balance"] == balance and diff.actual["balance"] == balance + 1
    assert bad["levels"].differences[0].actual is None  # missing row
    assert bad["inventory"].differences[0].expected is None  # row that should not exist
    before = {t.table: t.digest for t in clean.tables}
    assert bad["balances"].digest != before["balances"]
    assert bad["balances"].expected_digest == before["balances"]
    # Machine-readable for `ledger verify --json`.
    decoded = msgspec.json.decode(msgspec.json.encode(report))
    assert decoded["ok"] is False and len(decoded["tables"]) == len(report.tables)


def test_verify_caps_the_differences_it_lists(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    env.sql("UPDATE activity_counters SET messages = messages + 1")
    report = env.run(verify(env.store.pool, ["activity"], max_differences=3))
    (check,) = report.tables
    assert check.difference_count == 12 and len(check.differences) == 3


def test_verify_compares_at_each_projectors_checkpoint(traffic_env: LedgerEnv) -> None:
    """Projectors at different places in the log are each checked against their own point."""
    env = traffic_env
    project(env)
    env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="late", member_id=77)))
    env.run(catch_up(env.store.pool, ["wallets"]))
    report = env.run(verify(env.store.pool))
    assert report.ok
    points = {t.projector: t.checkpoint for t in report.tables}
    assert points["wallets"] > points["levels"]
    project(env)
    assert_tables_equal_fold(env)


def test_status_shows_lag_then_the_transaction_holding_it_back(env: LedgerEnv) -> None:
    for i in range(3):
        env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id=f"j{i}", member_id=i + 1)))
    states = env.run(status(env.store.pool))
    assert [s.lag_events for s in states] == [3] * len(states)
    assert all(s.lag_seconds >= 0 and not s.leased for s in states)
    project(env)
    with psycopg.connect(env.url) as stuck:
        stuck.execute("SELECT pg_current_xact_id()")  # an xid, as any writer would have
        env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="j9", member_id=9)))
        states = env.run(status(env.store.pool))
        for s in states:
            assert s.lag_events == 1 and s.held_back_events == 1
            assert s.held_back_by is not None
            assert s.held_back_by.pid == stuck.info.backend_pid
            assert s.held_back_by.age_seconds >= 0
        stuck.rollback()
    project(env)
    assert all(
        s.lag_events == 0 and s.held_back_by is None for s in env.run(status(env.store.pool))
    )
