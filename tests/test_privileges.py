"""Least privilege: the application role can append to and read the log, never rewrite it."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from ledger import commands as cmd
from ledger.database import make_pool
from ledger.service import Ledger
from ledger.store import EventStore
from tests.fix_db import LedgerEnv


def app_url(env: LedgerEnv) -> str:
    """Log in as ledger_app; a fresh password makes it work under password auth too."""
    password = secrets.token_hex(16)
    with psycopg.connect(env.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE ledger_app PASSWORD {}").format(sql.Literal(password)))
    return make_conninfo(env.url, user="ledger_app", password=password)


def test_the_app_role_runs_the_service(env: LedgerEnv) -> None:
    async def scenario() -> list[str]:
        async with make_pool(app_url(env), min_size=1, max_size=2) as pool:
            outcome = await Ledger(EventStore(pool)).execute(
                cmd.Transfer(guild_id=1, command_id="t", from_id=1, to_id=2, amount=5)
            )
            return outcome.events

    assert env.run(scenario())[-1] == "transfer_received"
    assert env.sql("SELECT count(*) FROM events")[0][0] == 4


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "DROP TABLE events",
    ],
)
def test_the_app_role_cannot_rewrite_history(env: LedgerEnv, statement: str) -> None:
    env.run(env.ledger.execute(cmd.Join(guild_id=1, command_id="j", member_id=3)))
    with (
        psycopg.connect(app_url(env), autocommit=True) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute(statement.encode())
    assert env.sql("SELECT count(*) FROM events")[0][0] == 1


def test_the_app_role_keeps_its_privileges_on_rebuilt_tables(env: LedgerEnv) -> None:
    from projections import catch_up, rebuild, verify

    env.run(
        env.ledger.execute(cmd.Transfer(guild_id=1, command_id="t", from_id=1, to_id=2, amount=5))
    )
    env.run(rebuild(env.store.pool))  # as the owner: new tables swapped in

    async def as_app() -> bool:
        async with make_pool(app_url(env), min_size=1, max_size=4) as pool:
            await Ledger(EventStore(pool)).execute(
                cmd.Transfer(guild_id=1, command_id="t2", from_id=2, to_id=1, amount=3)
            )
            await catch_up(pool)
            return (await verify(pool)).ok

    assert env.run(as_app())
    # the log itself stayed append-only for the role
    grants = env.sql(
        "SELECT privilege_type FROM information_schema.role_table_grants "
        "WHERE table_name = 'events' AND grantee = 'ledger_app' ORDER BY 1"
    )
    assert [g for (g,) in grants] == ["INSERT", "SELECT"]
