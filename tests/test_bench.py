"""`ledger bench --quick` end to end: every workload runs, with its baseline, and the
invariants hold afterwards. A smoke test: no timing is asserted."""

from __future__ import annotations

import json

import pytest

from gateway.cli import main
from tests.fix_db import LedgerEnv


def test_quick_bench_runs_every_workload_with_its_baseline(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", env.url)
    assert main(["bench", "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["setup"]["cores"] and report["setup"]["server_version"]
    results = {r["key"]: r for r in report["results"]}
    assert set(results) >= {"P1", "P2", "P3", "P8"}
    for key, result in results.items():
        assert result["figure"] > 0, key
        assert result["invariants"].startswith("ok"), (key, result["invariants"])
        assert result["baseline"] is not None and result["baseline"] > 0, key
        assert result["ratio"] is not None, key
