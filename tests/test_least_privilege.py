"""Least privilege, second half: the services of the CLI, the bot and the workers run as
`ledger_app` (migrations and rebuilds as the owner), which cannot rewrite the log; and secrets
(database passwords, the Discord token) never reach logs or error messages."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.bot import BotSettings
from gateway.cli import main, redact
from gateway.cli_commands import app_services
from ledger import commands as cmd
from ledger.database import Settings, resolve_app_url
from projections import catch_up, status, verify
from tests.fix_db import LedgerEnv

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0  # bound on waiting for an external process, not a timing assertion
SECRET = "Sup3r-S3cret-pw"


def app_login(env: LedgerEnv) -> str:
    """`ledger_app`'s own login (a fresh password, so password auth works too)."""
    password = secrets.token_hex(16)
    with psycopg.connect(env.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE ledger_app PASSWORD {}").format(sql.Literal(password)))
    return make_conninfo(env.url, user="ledger_app", password=password)


def free_port() -> int:
    """A local port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_clis_services_connect_as_ledger_app(env: LedgerEnv, tmp_path: Path) -> None:
    settings = Settings(database_url=env.url, data_dir=tmp_path, database_app_url=app_login(env))

    async def scenario() -> tuple[str, list[type[Exception]], bool]:
        refused: list[type[Exception]] = []
        async with app_services(settings) as services:
            await services.ledger.execute(
                cmd.Transfer(guild_id=1, command_id="t", from_id=1, to_id=2, amount=5)
            )
            async with services.pool.connection() as conn:
                user = await (await conn.execute("SELECT current_user")).fetchone()
                for statement in ("UPDATE events SET data = '{}'", "DELETE FROM events"):
                    try:
                        await conn.execute(statement.encode())
                    except errors.InsufficientPrivilege as exc:
                        refused.append(type(exc))
            await catch_up(services.pool)  # a worker's work, as the role
            ok = (await verify(services.pool)).ok
        assert user is not None
        return str(user[0]), refused, ok

    user, refused, verified = env.run(scenario())
    assert user == "ledger_app"
    assert refused == [errors.InsufficientPrivilege] * 2
    assert verified
    assert env.sql("SELECT count(*) FROM events") == [(4,)]


def test_where_the_services_connect(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    owner = "host=/tmp/pg dbname=ledger user=postgres"
    embedded = resolve_app_url(Settings(None, tmp_path), owner)
    assert embedded is not None
    assert conninfo_to_dict(embedded) == {**conninfo_to_dict(owner), "user": "ledger_app"}
    given = Settings(owner, tmp_path, database_app_url="host=db user=ledger_app password=x")
    assert resolve_app_url(given, owner) == "host=db user=ledger_app password=x"
    with caplog.at_level(logging.WARNING):
        assert resolve_app_url(Settings(owner, tmp_path), owner) is None  # the owner, said so
    assert "DATABASE_APP_URL" in caplog.text


def test_a_worker_process_projects_as_ledger_app(env: LedgerEnv, tmp_path: Path) -> None:
    for n in range(30):
        env.run(
            env.ledger.execute(
                cmd.Transfer(guild_id=1, command_id=f"t{n}", from_id=1 + n % 3, to_id=9, amount=1)
            )
        )
    port = free_port()
    environ = {
        **os.environ,
        "DATABASE_URL": env.url,
        "DATABASE_APP_URL": app_login(env),
        "LEDGER_DATA_DIR": str(tmp_path),
    }
    with (tmp_path / "project.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "project", "--health-port", str(port)],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    database = conninfo_to_dict(env.url)["dbname"]
    try:
        give_up = time.monotonic() + DEADLINE
        while True:  # an external process: bounded polling until it has caught up
            states = env.run(status(env.store.pool))
            if states and all(s.lag_events == 0 and s.leased for s in states):
                break
            assert worker.poll() is None, (tmp_path / "project.log").read_text()
            assert time.monotonic() < give_up, "the worker did not catch up"
            time.sleep(0.05)
        # the sessions holding the projectors' leases are the worker's: who are they?
        users = env.sql(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s AND pid = ANY(%s)",
            (database, [s.lease_pid for s in states]),
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        worker.send_signal(signal.SIGTERM)  # graceful: it drains and exits 0
        assert worker.wait(timeout=DEADLINE) == 0, (tmp_path / "project.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=DEADLINE)
    assert users == [("ledger_app",)]
    assert "ledger_projection_lag_events" in metrics
    assert env.run(verify(env.store.pool)).ok


BAD_URLS = [
    f"postgresql://ledger:{SECRET}@[::1/ledger",  # malformed: libpq quotes it whole
    f"postgresql://ledger:{SECRET}@127.0.0.1:9/ledger?connect_timeout=2",  # nobody listens
    f"postgresql://ledger:{SECRET}@127.0.0.1:notaport/ledger",
    f"host=127.0.0.1 port=9 password={SECRET} connect_timeout=2",
    f"host=127.0.0.1 password='{SECRET}' port",
]


@pytest.mark.parametrize("url", BAD_URLS, ids=range(len(BAD_URLS)))
@pytest.mark.parametrize("argv", [["-v", "stats", "1"], ["migrate"], ["verify"]])
def test_a_database_password_is_never_printed_or_logged(
    url: str,
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATABASE_APP_URL", url.replace("ledger:", "ledger_app:"))
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    caplog.set_level(logging.DEBUG)
    code = main(argv)
    # a library logging the connection string it failed with is scrubbed too (a logger of
    # the test's own: another test's library may have disabled the existing ones)
    probe = logging.getLogger("tests.redaction_probe")
    probe.disabled = False
    probe.warning("error connecting with %s", url)
    out, err = capsys.readouterr()
    assert code in (1, 3), (code, err)
    assert err.startswith("error: ") and "Traceback" not in err
    for where, text in (("stdout", out), ("stderr", err), ("logs", caplog.text)):
        assert SECRET not in text, f"the password reached {where}: {text}"
    assert "***" in caplog.text


def test_redact_keeps_everything_but_the_password() -> None:
    environ = {"DATABASE_URL": f"host=h user=u password={SECRET}"}
    assert redact(f"bad {SECRET} here", environ) == "bad *** here"
    assert redact(f"postgres://u:{SECRET}@h:5/d", {}) == "postgres://u:***@h:5/d"
    assert redact(f"user=u password='{SECRET} x' host=h", {}) == "user=u password=*** host=h"
    assert redact("connection to server at 127.0.0.1 port 9 failed", {}) == (
        "connection to server at 127.0.0.1 port 9 failed"
    )


def test_bot_settings_never_show_the_token() -> None:
    token = "MTIz.NDU2.Nzg5-" + secrets.token_hex(8)
    settings = BotSettings.from_env({"DISCORD_TOKEN": token, "DISCORD_GUILD_ID": "42"})
    assert settings.token == token
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}", [settings]):
        assert token not in str(shown)
    assert "42" in repr(settings)
