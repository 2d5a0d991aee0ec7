"""The operator CLI end to end on a fresh database: demo, verify, status, rebuild, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest

from gateway.cli import main
from ledger import commands as cmd
from tests.fix_db import LedgerEnv

GUILD = 424242
NEW = 987654321  # a member the demo's traffic never has


@pytest.fixture
def demo_db(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> LedgerEnv:
    """A small simulated guild, projected and verified by `ledger demo` itself."""
    monkeypatch.setenv("DATABASE_URL", env.url)
    code = main(
        ["demo", "--members", "30", "--events", "600", "--seed", "7", "--guild", str(GUILD)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verify: OK" in out and "hash chain: ok" in out
    return env


def test_verify_fails_with_a_diff_when_a_row_is_altered(
    demo_db: LedgerEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    member = demo_db.sql("SELECT member_id FROM balances WHERE guild_id = %s LIMIT 1", (GUILD,))[0][
        0
    ]
    demo_db.sql(
        "UPDATE balances SET balance = balance + 1000 WHERE guild_id = %s AND member_id = %s",
        (GUILD, member),
    )
    assert main(["verify"]) == 1
    out = capsys.readouterr().out
    assert "DIFF" in out and "balances" in out and str(member) in out and "MISMATCH" in out
    assert main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    # a rebuild restores the table from the log, in one process or several
    assert main(["rebuild", "wallets"]) == 0
    capsys.readouterr()
    assert main(["verify"]) == 0
    capsys.readouterr()
    assert main(["rebuild", "--jobs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == 2
    assert main(["verify"]) == 0


def test_verify_chain_names_a_tampered_event(
    demo_db: LedgerEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--chain"]) == 0
    victim = demo_db.sql(
        "SELECT position FROM events WHERE guild_id = %s AND type = 'transfer_sent' LIMIT 1",
        (GUILD,),
    )[0][0]
    with psycopg.connect(demo_db.url) as conn:
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE events SET data = jsonb_set(data, '{amount}', '999') WHERE position = %s",
            (victim,),
        )
        conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
    capsys.readouterr()
    assert main(["verify", "--chain"]) == 1
    out = capsys.readouterr().out
    assert f"event {victim} " in out and "BROKEN" in out


def test_status_audit_and_usage_errors(
    demo_db: LedgerEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["lag_events"] == 0 for r in rows)
    member = demo_db.sql(
        "SELECT stream FROM streams WHERE guild_id = %s AND stream > 0 LIMIT 1", (GUILD,)
    )[0][0]
    assert main(["audit", str(GUILD), str(member), "--json"]) == 0
    statement = json.loads(capsys.readouterr().out)
    balance = demo_db.sql(
        "SELECT balance FROM balances WHERE guild_id = %s AND member_id = %s", (GUILD, member)
    )
    assert statement["matches_state"] and [(statement["closing"]["balance"],)] == balance
    assert statement["matches_read_tables"]
    assert main(["rebuild", "no-such-projector"]) == 2
    assert "unknown projector" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["transfer-everything"])
    assert usage.value.code == 2


def test_revert_then_verify_restores_prior_balances(
    demo_db: LedgerEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_grants = demo_db.sql(
        "SELECT position, stream FROM events WHERE guild_id = %s AND type = 'lc_minted' "
        "AND data->>'reason' = 'admin' ORDER BY position LIMIT 1",
        (GUILD,),
    )
    assert admin_grants, "the demo's traffic includes admin grants"
    position, member = admin_grants[0]
    amount = demo_db.sql(
        "SELECT (data->>'amount')::bigint FROM events WHERE position = %s", (position,)
    )[0][0]
    before = demo_db.sql(
        "SELECT (state->>'balance')::bigint FROM streams WHERE guild_id = %s AND stream = %s",
        (GUILD, member),
    )[0][0]
    code = main(
        [
            "revert",
            str(GUILD),
            "--positions",
            str(position),
            "--yes",
            "--on-shortfall",
            "clamp",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["applied"] and len(result["appended"]) >= 1
    after = demo_db.sql(
        "SELECT (state->>'balance')::bigint FROM streams WHERE guild_id = %s AND stream = %s",
        (GUILD, member),
    )[0][0]
    assert after == max(0, before - amount)
    assert main(["project", "--once"]) == 0  # the workers' job in production
    assert "projected" in capsys.readouterr().out
    assert main(["verify", "--chain"]) == 0
    assert "verify: OK" in capsys.readouterr().out


def test_project_once_names_the_transaction_that_holds_it_back(
    demo_db: LedgerEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(demo_db.url) as holder:
        holder.execute("SELECT pg_current_xact_id()")
        join = cmd.Join(guild_id=GUILD, command_id="cli-held", member_id=NEW, at=datetime.now(UTC))
        demo_db.run(demo_db.ledger.execute(join))
        assert main(["project", "--once", "--max-wait", "0.2"]) == 1
        err = capsys.readouterr().err
        assert "not caught up" in err and f"pid {holder.info.backend_pid}" in err
    balance = "SELECT balance FROM balances WHERE guild_id = %s AND member_id = %s"
    assert demo_db.sql(balance, (GUILD, NEW)) == []
    assert main(["project", "--once"]) == 0
    assert "projected" in capsys.readouterr().out
    assert len(demo_db.sql(balance, (GUILD, NEW))) == 1
    assert main(["project", "--max-wait", "5"]) == 2  # only means something with --once
    assert "--max-wait" in capsys.readouterr().err


def test_a_statement_the_server_stopped_is_not_reported_as_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A statement timeout is an OperationalError too, but the server answered: exit 1, not 3.
    from gateway import cli_projections

    async def times_out(*_: object) -> int:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    monkeypatch.setitem(cli_projections.HANDLERS, "status", times_out)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "stopped a statement: canceling statement due to statement timeout" in err
    assert "cannot reach" not in err


def test_a_file_name_the_file_system_cannot_take_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found by the hostile-input property test: a lone surrogate reached open() and crashed.
    with pytest.raises(SystemExit) as usage:
        main(["import", "mee6", "1", "\ud800"])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "not a file name" in err and "Traceback" not in err
