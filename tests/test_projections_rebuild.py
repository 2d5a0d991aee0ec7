"""Blue/green rebuild: equals the fold, deterministic, bounded, swapped atomically."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from projections import RebuildBusy, catch_up, partitions, rebuild, run_workers, status, verify
from projections import worker as worker_module
from projections.bulk_worker import Job
from projections.checkpoints import REBUILD_CLASS, lock_id
from projections.log import FIRST_MEMBER, LAST_MEMBER, MemberKey
from projections.partitions import split
from tests.fix_db import LedgerEnv
from tests.fix_projections import (
    Traffic,
    assert_tables_equal_fold,
    execute_all,
    project,
    simulate,
)

INDEXES = """
SELECT tablename, indexname, regexp_replace(indexdef, 'ON \\S+ ', 'ON ') FROM pg_indexes
 WHERE schemaname = 'public' AND tablename = ANY(%s) ORDER BY 1, 2
"""
TABLES = [
    "balances",
    "levels",
    "inventory",
    "active_multipliers",
    "leaderboard_scores",
    "leaderboard_buckets",
    "warnings",
    "moderation_log",
    "activity_counters",
]


def digests(env: LedgerEnv) -> dict[str, str]:
    """Each live table's digest, after checking that it matches the log."""
    report = env.run(verify(env.store.pool))
    assert report.ok, [d for t in report.tables for d in t.differences]
    return {t.table: t.digest for t in report.tables}


def test_rebuild_equals_fold_and_twice_gives_the_same_bytes(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    project(env)
    live = digests(env)
    indexes = env.sql(INDEXES, (TABLES,))
    seen: list[tuple[int, int]] = []
    report = env.run(
        rebuild(env.store.pool, progress=lambda done, total: seen.append((done, total)))
    )
    assert report.events == env.sql("SELECT count(*) FROM events")[0][0]
    assert seen and seen[-1][0] == report.events and all(d <= t for d, t in seen)
    assert_tables_equal_fold(env)
    # vacuumed before the swap: a rank's count inside a bucket is an index-only scan at once
    assert env.sql(
        "SELECT relallvisible = relpages AND relpages > 0 FROM pg_class"
        " WHERE oid = 'leaderboard_scores'::regclass"
    ) == [(True,)]
    first = digests(env)
    # Both ways of folding, with many flushes (and, in delivery order, reads back).
    env.run(rebuild(env.store.pool, chunk_size=17, max_rows=40, order="delivery"))
    assert digests(env) == first == live
    env.run(rebuild(env.store.pool, chunk_size=17, max_rows=40, order="member"))
    assert digests(env) == first
    # Moving tables between schemas keeps their index names: nothing drifts rebuild after rebuild.
    assert env.sql(INDEXES, (TABLES,)) == indexes
    assert env.sql("SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'projection_%%'") == [(0,)]


def test_rebuild_of_one_projector_before_any_worker_ran(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    report = env.run(rebuild(env.store.pool, ["leaderboards"]))
    assert report.projectors == ["leaderboards"]
    assert env.sql("SELECT count(*) FROM balances") == [(0,)]
    assert env.sql("SELECT count(*) FROM leaderboard_scores")[0][0] > 0
    project(env)  # the others start from scratch; leaderboards continue after the rebuild
    assert_tables_equal_fold(env)


def test_rebuild_while_workers_and_writers_run(
    env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "CLAIM_INTERVAL", 0.05)
    pool = env.store.pool
    commands = Traffic(seed=51).commands(320)
    simulate(env, seed=50, count=150)

    async def scenario() -> list[int]:
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_workers(pool, stop=stop, batch_size=11, poll_interval=0.05)
        )
        counts: list[int] = []
        watching = True

        async def watch() -> None:  # a reader during the swap: whole tables only, never half
            while watching:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(*) FROM activity_counters")
                    row = await cur.fetchone()
                    assert row is not None
                    counts.append(row[0])
                await asyncio.sleep(0)

        await catch_up(pool)
        watcher = asyncio.create_task(watch())
        writers = asyncio.create_task(execute_all(env, commands))
        await rebuild(pool, chunk_size=25, max_rows=200)
        await writers
        await rebuild(pool, ["wallets", "moderation"], chunk_size=40)
        watching = False
        await watcher
        await catch_up(pool)
        stop.set()
        await worker
        return counts

    counts = env.run(scenario())
    assert counts and all(c >= 12 for c in counts)  # every member was active before the rebuild
    assert_tables_equal_fold(env)


def test_rebuild_refuses_to_run_twice_at_once(env: LedgerEnv) -> None:
    with psycopg.connect(env.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (REBUILD_CLASS, lock_id("levels")))
        with pytest.raises(RebuildBusy):
            env.run(rebuild(env.store.pool, ["wallets", "levels"]))
    # Nothing was left half-done: the next rebuild runs.
    env.run(rebuild(env.store.pool, ["wallets", "levels"]))


def test_rebuild_sets_checkpoints_and_status(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    report = env.run(rebuild(env.store.pool))
    states = env.run(status(env.store.pool))
    assert {s.name for s in states} == set(report.applied)
    for s in states:
        assert s.checkpoint == report.checkpoint
        assert s.rebuilt_at is not None and s.lag_events == 0
        assert s.events_applied == report.applied[s.name]
    assert report.events_per_second > 0


def test_rebuild_in_several_processes_gives_the_same_bytes(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    one = env.run(rebuild(env.store.pool, chunk_size=17, max_rows=40, order="member", jobs=1))
    first = digests(env)
    seen: list[tuple[int, int]] = []
    three = env.run(
        rebuild(
            env.store.pool,
            chunk_size=17,
            max_rows=40,
            order="member",
            jobs=3,
            progress=lambda done, total: seen.append((done, total)),
        )
    )
    assert three.jobs == 3 and one.jobs == 1
    assert three.workers_peak_rss_bytes > 0 == one.workers_peak_rss_bytes
    assert three.events == one.events == env.sql("SELECT count(*) FROM events")[0][0]
    assert three.applied == one.applied
    assert seen[-1][0] == three.events
    assert digests(env) == first
    assert_tables_equal_fold(env)


def test_split_cuts_member_order_into_ranges_of_about_equal_events(
    traffic_env: LedgerEnv,
) -> None:
    env = traffic_env

    async def ranges(jobs: int) -> list[tuple[MemberKey, MemberKey]]:
        async with env.store.pool.connection() as conn:
            return await split(conn, jobs)

    streams = env.sql("SELECT guild_id, stream, version FROM streams ORDER BY 1, 2")
    total = sum(int(v) for _, _, v in streams)
    biggest = max(int(v) for _, _, v in streams)
    assert env.run(ranges(1)) == [(FIRST_MEMBER, LAST_MEMBER)]
    for jobs in (2, 3, 5):
        cut = env.run(ranges(jobs))
        assert len(cut) == jobs
        assert cut[0][0] == FIRST_MEMBER and cut[-1][1] == LAST_MEMBER
        assert all(a[1] == b[0] for a, b in itertools.pairwise(cut))  # contiguous
        for first, stop in cut:
            events = sum(int(v) for g, s, v in streams if first <= (g, s) < stop)
            assert abs(events - total / jobs) <= biggest


def test_a_failing_worker_fails_the_rebuild_and_leaves_the_live_tables(
    traffic_env: LedgerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = traffic_env
    project(env)
    live = digests(env)

    def unreachable(**fields: Any) -> Job:
        fields["conninfo"] = make_conninfo(fields["conninfo"], dbname="no_such_database")
        return Job(**fields)

    monkeypatch.setattr(partitions, "Job", unreachable)
    with pytest.raises(partitions.WorkerFailed, match="no_such_database"):
        env.run(rebuild(env.store.pool, order="member", jobs=2))
    assert digests(env) == live
    monkeypatch.undo()
    env.run(rebuild(env.store.pool, order="member", jobs=2))
    assert digests(env) == live


def _job(env: LedgerEnv, projectors: list[str], shadows: dict[str, int]) -> Job:
    return Job(
        conninfo=env.store.pool.conninfo,  # type: ignore[arg-type]
        projectors=projectors,
        horizon=env.sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")[0][0],  # type: ignore[arg-type]
        members=(FIRST_MEMBER, LAST_MEMBER),
        chunk_size=10,
        max_rows=10,
        shadows=shadows,
    )


def test_a_worker_reports_what_went_wrong(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    with pytest.raises(partitions.WorkerFailed, match="no_such_projector"):
        env.run(partitions.Worker(_job(env, ["no_such_projector"], {})).run(lambda done: None))


def test_a_worker_writes_only_into_the_shadows_it_was_started_for(
    traffic_env: LedgerEnv,
) -> None:
    env = traffic_env
    env.sql("CREATE SCHEMA IF NOT EXISTS projection_shadow")
    env.sql("CREATE TABLE projection_shadow.balances (LIKE balances)")
    oid = env.sql("SELECT 'projection_shadow.balances'::regclass::oid::int8")[0][0]
    members = env.sql("SELECT count(DISTINCT (guild_id, stream)) FROM events WHERE stream <> 0")
    # shadows replaced since (another rebuild's tables under the same name): nothing written
    stale = _job(env, ["wallets"], {"balances": int(oid) + 1})  # type: ignore[call-overload]
    with pytest.raises(partitions.WorkerFailed, match="replaced"):
        env.run(partitions.Worker(stale).run(lambda done: None))
    assert env.sql("SELECT count(*) FROM projection_shadow.balances") == [(0,)]
    # its own shadows: every member's balance row
    done = env.run(
        partitions.Worker(_job(env, ["wallets"], {"balances": oid})).run(lambda done: None)  # type: ignore[dict-item]
    )
    assert done.applied["wallets"] > 0
    assert env.sql("SELECT count(*) FROM projection_shadow.balances") == members
    env.sql("DROP TABLE projection_shadow.balances")


# Starts a rebuild worker for the job on stdin and prints its pid with each progress report; the
# test kills this process (the worker's parent) with SIGKILL after the first report.
PARENT = r"""
import asyncio, sys
import msgspec
from projections import partitions
from projections.bulk_worker import Job

async def main():
    worker = partitions.Worker(msgspec.json.decode(sys.stdin.buffer.read(), type=Job))
    def progress(done):
        print(worker.process.pid, done, flush=True)
    await worker.run(progress)

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # exited, not reaped
    except FileNotFoundError:
        return True


def test_a_worker_whose_rebuild_died_stops_at_its_next_chunk(traffic_env: LedgerEnv) -> None:
    env = traffic_env
    env.sql("CREATE SCHEMA IF NOT EXISTS projection_shadow")
    env.sql("CREATE TABLE projection_shadow.balances (LIKE balances)")
    oid = env.sql("SELECT 'projection_shadow.balances'::regclass::oid::int8")[0][0]
    members = env.sql("SELECT count(DISTINCT (guild_id, stream)) FROM events WHERE stream <> 0")
    job = _job(env, ["wallets"], {"balances": oid})  # type: ignore[dict-item]
    job = msgspec.structs.replace(job, chunk_size=1, max_rows=1)  # hundreds of chunks
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdin is not None and parent.stdout is not None
    parent.stdin.write(msgspec.json.encode(job).decode())
    parent.stdin.close()
    worker = int(parent.stdout.readline().split()[0])  # it has folded its first chunk
    parent.kill()
    parent.wait(timeout=30)
    parent.stdout.close()
    give_up = time.monotonic() + 30  # a bound on waiting for another process, not a timing check
    while not _gone(worker):
        assert time.monotonic() < give_up, "the orphaned worker kept running"
        time.sleep(0.02)
    # it stopped early: most members were never written
    written = env.sql("SELECT count(*) FROM projection_shadow.balances")[0][0]
    assert written < members[0][0] // 2  # type: ignore[operator]
    env.sql("DROP TABLE projection_shadow.balances")


def test_a_member_order_rebuild_first_samples_a_log_without_statistics(env: LedgerEnv) -> None:
    """A log just grown by an import has no statistics, and member-order reads plan badly."""
    stats = "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'events'"

    async def statistics() -> int:
        async with env.store.pool.connection() as conn:
            row = await (await conn.execute(stats)).fetchone()
            assert row is not None
            return int(row[0])

    async def no_autovacuum() -> None:
        async with env.store.pool.connection() as conn:
            await conn.execute("ALTER TABLE events SET (autovacuum_enabled = off)")

    env.run(no_autovacuum())
    simulate(env, seed=11, count=150)
    assert env.run(statistics()) == 0
    env.run(rebuild(env.store.pool, order="member"))
    assert env.run(statistics()) > 0
    assert_tables_equal_fold(env)
