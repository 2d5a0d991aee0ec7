"""Tamper evidence: the per-guild hash chain is sealed after commit and names what changed."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from ledger import commands as cmd
from ledger.chain import SEALER_LOCK_ID, seal, verify_chain
from ledger.profiles import forget, remember_names
from tests.fix_db import LedgerEnv

GUILDS = (111, 222)
T0 = datetime(2026, 5, 1, tzinfo=UTC)


def traffic(env: LedgerEnv) -> None:
    for n in range(12):
        for guild in GUILDS:
            env.run(
                env.ledger.execute(
                    cmd.Transfer(
                        guild_id=guild,
                        command_id=f"t{n}",
                        from_id=1 + n % 3,
                        to_id=4,
                        amount=1,
                        at=T0,
                    )
                )
            )


def superuser(env: LedgerEnv, statement: str) -> None:
    """Change the log behind the application's back, as a superuser could."""
    with psycopg.connect(env.url, autocommit=False) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        conn.execute(statement.encode())
        conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
        conn.commit()


def test_sealed_chain_verifies_and_covers_every_event(env: LedgerEnv) -> None:
    traffic(env)
    sealed = env.run(seal(env.store.pool))
    total = env.sql("SELECT count(*) FROM events")[0][0]
    assert sealed == total
    report = env.run(verify_chain(env.store.pool))
    assert report.ok and report.guilds == 2 and report.events == total
    # per guild, links are numbered 1..n in delivery order
    for guild in GUILDS:
        seqs = env.sql(
            "SELECT h.seq FROM event_hashes h JOIN events e USING (guild_id, position) "
            "WHERE guild_id = %s ORDER BY e.tx, e.position",
            (guild,),
        )
        assert [s for (s,) in seqs] == list(range(1, len(seqs) + 1))
    # more traffic, sealed incrementally, still verifies
    env.run(env.ledger.execute(cmd.Join(guild_id=111, command_id="late", member_id=9, at=T0)))
    assert env.run(seal(env.store.pool)) == 1
    assert env.run(verify_chain(env.store.pool)).ok


def test_an_edited_payload_is_named(env: LedgerEnv) -> None:
    traffic(env)
    env.run(seal(env.store.pool))
    victim = env.sql(
        "SELECT position FROM events WHERE guild_id = 222 AND type = 'transfer_sent' "
        "ORDER BY position LIMIT 1 OFFSET 3"
    )[0][0]
    superuser(
        env,
        f"UPDATE events SET data = jsonb_set(data, '{{amount}}', '1000') WHERE position = {victim}",
    )
    report = env.run(verify_chain(env.store.pool))
    assert not report.ok
    assert len(report.problems) == 1 and f"event {victim} " in report.problems[0]
    assert "guild 222" in report.problems[0]
    assert env.run(verify_chain(env.store.pool, guild_id=111)).ok


def test_a_deleted_event_is_named(env: LedgerEnv) -> None:
    traffic(env)
    env.run(seal(env.store.pool))
    victim = env.sql("SELECT max(position) FROM events WHERE guild_id = 111")[0][0]
    superuser(env, f"DELETE FROM events WHERE position = {victim}")
    report = env.run(verify_chain(env.store.pool))
    assert not report.ok and str(victim) in report.problems[0]


def test_one_sealer_at_a_time(env: LedgerEnv) -> None:
    traffic(env)
    with psycopg.connect(env.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (SEALER_LOCK_ID,))
        assert env.run(seal(env.store.pool)) == 0
        # unlock explicitly: a closed connection's locks are released asynchronously
        other.execute("SELECT pg_advisory_unlock(%s)", (SEALER_LOCK_ID,))
        assert env.run(seal(env.store.pool)) > 0


def test_forget_leaves_the_chain_valid(env: LedgerEnv) -> None:
    traffic(env)
    env.run(remember_names(env.store.pool, 111, [(1, "Alice"), (4, "Dora")]))
    env.run(seal(env.store.pool))
    assert env.run(forget(env.store.pool, 1)) == 1
    assert env.run(verify_chain(env.store.pool)).ok
