"""`ledger bench --quick` end to end: every workload P1-P8 runs, with its baseline, and the
invariants hold afterwards. A smoke test: no timing is asserted."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

import psycopg
import pytest

from gateway import cli_commands
from gateway.bench.baselines import BaselineFailed
from gateway.bench.checks import joined, reported
from gateway.cli import main
from ledger.database import Settings
from tests.fix_db import LedgerEnv

WORKLOADS = {"P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"}


def test_quick_bench_runs_every_workload_with_its_baseline(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", env.url)
    assert main(["bench", "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["setup"]["cores"] and report["setup"]["server_version"]
    results = report["results"]
    assert {r["key"] for r in results} == WORKLOADS
    # P4 reports a busy guild's backlog and a sparse one; P6 each of its four queries
    assert len([r for r in results if r["key"] == "P4"]) == 2
    assert len([r for r in results if r["key"] == "P6"]) == 4
    for result in results:
        key = result["key"]
        assert result["figure"] > 0, key
        assert result["invariants"].startswith("ok"), (key, result["invariants"])
        assert result["baseline"] is not None and result["baseline"] > 0, key
        assert result["ratio"] is not None, key
    # The projection workloads ran on the data they describe: a backlog, a whole log, a guild.
    by_key = {r["key"]: r for r in results}
    busy, sparse = (r for r in results if r["key"] == "P4")
    assert "busy guild (400 members)" in busy["workload"] and "20,0" in busy["workload"]
    assert "20,0" in sparse["workload"] and "sparse" in sparse["workload"]
    assert "5,000-member guild" in by_key["P6"]["workload"]
    assert "verify" in by_key["P5"]["invariants"]
    assert "verify" in by_key["P7"]["invariants"]


def test_a_check_the_database_cuts_short_fails_the_check_not_the_run() -> None:
    @reported
    async def times_out() -> str:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    outcome = asyncio.run(times_out())
    assert (
        outcome == "could not check (QueryCanceled: canceling statement due to statement timeout)"
    )
    assert joined({"state rows": outcome}).startswith("state rows: could not check")


def _fake_private_server(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the bench's embedded server with one that records its starts and stops."""
    calls: list[str] = []

    class Server:
        def __init__(self, root: Path) -> None:
            self.root = root

        def start(self) -> str:
            calls.append("start")
            return "postgresql://unused"

        def stop(self) -> None:
            calls.append("stop")

    monkeypatch.setattr(cli_commands, "EmbeddedPostgres", Server)
    return calls


def test_a_failing_bench_stops_its_private_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The private server lives in a scratch directory removed at the end: a workload that
    fails must not leave it running on the removed directory (holding its disk space). A
    failed baseline tool is an error line and exit code 1, not a traceback."""
    calls = _fake_private_server(monkeypatch)

    async def failing_run(*args: object, **kwargs: object) -> None:
        raise BaselineFailed("pgbench failed: No space left on device")

    monkeypatch.setattr(cli_commands, "run_bench", failing_run)
    settings = Settings(database_url=None, data_dir=tmp_path)
    args = argparse.Namespace(only="P1", quick=True, json=False, markdown=None)
    assert asyncio.run(cli_commands.bench(args, settings)) == 1
    assert calls == ["start", "stop"]
    assert "error: pgbench failed: No space left on device" in capsys.readouterr().err


def test_a_terminated_bench_stops_its_private_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (a CI timeout, `kill`) stops the private server as Ctrl-C does."""
    calls = _fake_private_server(monkeypatch)

    async def terminated_run(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.Event().wait()  # until the signal cancels it

    def not_handled(signum: int, frame: object) -> None:
        raise RuntimeError("SIGTERM reached the default handling: no cleanup")

    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        monkeypatch.setattr(cli_commands, "run_bench", terminated_run)
        settings = Settings(database_url=None, data_dir=tmp_path)
        args = argparse.Namespace(only="P1", quick=True, json=False, markdown=None)
        assert asyncio.run(cli_commands.bench(args, settings)) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert calls == ["start", "stop"]
    assert "bench: stopped" in capsys.readouterr().err
