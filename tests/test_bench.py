"""`ledger bench --quick` end to end: every workload P1-P8 runs, with its baseline, and the
invariants hold afterwards. A smoke test: no timing is asserted."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from gateway.bench.checks import joined, reported
from gateway.cli import main
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
