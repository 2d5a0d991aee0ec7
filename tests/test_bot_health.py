"""`ledger bot --health-port` serves /healthz and /metrics while the bot runs, as `ledger_app`.

No Discord connection is possible here, so `LedgerBot.start` (the login and gateway loop) is
replaced by a stand-in that, while the real CLI wiring has the services, the health server and
the bot set up around it, asks the endpoints and the database what a scraper would, then
returns as a bot that was closed would.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from gateway import cli_bot
from gateway.bot import LedgerBot
from gateway.cli import main
from ledger import commands as cmd
from tests.fix_db import LedgerEnv


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a local GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def free_port() -> int:
    """A local port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ledger_bot_serves_health_and_metrics_as_ledger_app(
    env: LedgerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = secrets.token_hex(16)
    with psycopg.connect(env.url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE ledger_app PASSWORD {}").format(sql.Literal(password)))
    token = "bot-token-" + secrets.token_hex(8)
    monkeypatch.setenv("DISCORD_TOKEN", token)
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv(
        "DATABASE_APP_URL", make_conninfo(env.url, user="ledger_app", password=password)
    )
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    port = free_port()
    seen: dict[str, Any] = {}

    async def instead_of_discord(bot: LedgerBot, given: str, *, reconnect: bool = True) -> None:
        seen["token"] = given == token
        await bot.services.ledger.execute(
            cmd.Transfer(guild_id=1, command_id="t", from_id=1, to_id=2, amount=5)
        )
        async with bot.services.pool.connection() as conn:
            seen["user"] = (await (await conn.execute("SELECT current_user")).fetchone() or [""])[0]
        seen["healthz"] = await asyncio.to_thread(get, port, "/healthz")
        seen["metrics"] = await asyncio.to_thread(get, port, "/metrics")

    monkeypatch.setattr(cli_bot.LedgerBot, "start", instead_of_discord)
    assert main(["bot", "--no-sync", "--health-port", str(port)]) == 0
    assert seen["token"] and seen["user"] == "ledger_app"
    assert seen["healthz"] == (200, "ok\n")
    status, metrics = seen["metrics"]
    assert status == 200
    for name in (
        "ledger_appended_events_total 4",  # the append rate's counter
        "ledger_pool_connections",
        "ledger_spool_pending 0",  # the bot spools XP during an outage
        "ledger_projection_lag_events",
        "ledger_uptime_seconds",
    ):
        assert name in metrics, name
    # once the bot has stopped, so has its health server
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_ledger_bot_without_a_health_port_serves_nothing(
    env: LedgerEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    asked: list[int] = []
    real_start_health = cli_bot.start_health

    async def start_health(services: Any, port: int) -> Any:
        asked.append(port)
        return await real_start_health(services, port)

    async def instead_of_discord(bot: LedgerBot, given: str, *, reconnect: bool = True) -> None:
        pass

    monkeypatch.setattr(cli_bot, "start_health", start_health)
    monkeypatch.setattr(cli_bot.LedgerBot, "start", instead_of_discord)
    assert main(["bot", "--no-sync"]) == 0
    assert asked == [0]  # off by default: start_health serves nothing on port 0
