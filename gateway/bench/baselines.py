"""Baselines measured in the same run: raw PostgreSQL via pgbench, and the eventsourcing peer."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ledger.database import EmbeddedPostgres

# The events table's shape (columns, keys, delivery index), without the ledger's triggers.
RAW_TABLE = """
DROP TABLE IF EXISTS bench_raw_events;
CREATE TABLE bench_raw_events (
    position bigint GENERATED ALWAYS AS IDENTITY,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    guild_id bigint NOT NULL, stream bigint NOT NULL, version bigint NOT NULL,
    type text NOT NULL, schema_version smallint NOT NULL DEFAULT 1,
    data jsonb NOT NULL, meta jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (guild_id, position), UNIQUE (guild_id, stream, version));
CREATE INDEX ON bench_raw_events (tx, position);
"""

# pgbench scripts: a message-XP event's typical payload, inserted one row or 100 rows a commit.
SINGLE_ROW = r"""\set s random(1, 9000000000000000)
INSERT INTO bench_raw_events (guild_id, stream, version, type, data, meta)
VALUES (1, :s, 1, 'xp_granted', '{"type":"xp_granted","member_id":1,"at":"2026-01-01T00:00:00Z","source":"message","base":20,"multiplier_pct":100,"xp":20,"channel_id":5,"ref_id":7}', '{"command_id":"c"}');
"""
HUNDRED_ROWS = r"""\set s random(1, 9000000000000)
INSERT INTO bench_raw_events (guild_id, stream, version, type, data, meta)
SELECT 1, :s::bigint * 1000 + g, 1, 'xp_granted', '{"type":"xp_granted","member_id":1,"at":"2026-01-01T00:00:00Z","source":"message","base":20,"multiplier_pct":100,"xp":20,"channel_id":5,"ref_id":7}', '{"command_id":"c"}'
  FROM generate_series(1, 100) AS g;
"""

_TPS = re.compile(r"tps = ([0-9.]+)")


class BaselineFailed(RuntimeError):
    """A baseline tool (pgbench) failed: the run cannot be compared, so it stops."""


def pgbench(url: str, script: str, clients: int, seconds: float) -> float:
    """Transactions per second of `script` run by `clients` pgbench clients."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RAW_TABLE.encode())
    binary = Path(EmbeddedPostgres(Path(tempfile.gettempdir())).bin_dir) / "pgbench"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    arguments = ["-n", "-c", str(clients), "-j", str(min(clients, 2))]
    arguments += ["-T", str(max(1, round(seconds))), "-f", handle.name, url]
    try:
        out = subprocess.run(  # noqa: S603 (our own binary and arguments)
            [str(binary), *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 120,
        )
    finally:
        os.unlink(handle.name)
    if out.returncode != 0:
        raise BaselineFailed(f"pgbench failed: {out.stderr.strip()[-500:]}")
    match = _TPS.search(out.stdout)
    if not match:
        raise BaselineFailed(f"pgbench printed no tps: {out.stdout[-300:]} {out.stderr[-300:]}")
    return float(match[1])


def fsync_rate(data_dir: Path) -> float | None:
    """pg_test_fsync's best ops/s for the WAL's fsync method on the data directory's disk."""
    binary = Path(EmbeddedPostgres(data_dir).bin_dir) / "pg_test_fsync"
    target = data_dir / "bench_fsync.tmp"
    try:
        out = subprocess.run(  # noqa: S603
            [str(binary), "-s", "1", "-f", str(target)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        target.unlink(missing_ok=True)
    rates = [float(m) for m in re.findall(r"fdatasync\s+([0-9.]+) ops/sec", out.stdout)]
    return rates[0] if rates else None


def eventsourcing_saves(url: str, clients: int, seconds: float) -> float | None:
    """Saves/s of the eventsourcing library's PostgreSQL recorder: one member created plus one
    XP grant per save, from `clients` threads. None when the `bench` group is not installed."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return None

    class Member(Aggregate):
        @event("Joined")
        def __init__(self, guild_id: int, member_id: int) -> None:
            self.xp = 0

        @event("XpGranted")
        def grant(self, xp: int) -> None:
            self.xp += xp

    params = conninfo_to_dict(url)
    env: dict[str, Any] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params.get("dbname", "postgres"),
        "POSTGRES_HOST": params.get("host", "localhost"),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_PASSWORD": params.get("password", ""),
        "POSTGRES_POOL_SIZE": str(clients),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }
    app: Any = Application(env=env)
    deadline = time.monotonic() + seconds

    def client(n: int) -> int:
        saves = 0
        while time.monotonic() < deadline:
            member = Member(guild_id=1, member_id=n * 10**9 + saves)
            member.grant(20)
            app.save(member)
            saves += 1
        return saves

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    app.close()
    return total / elapsed
