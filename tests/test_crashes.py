"""SIGKILL of every kind of process at seeded random moments, and commits of unknown outcome.

Rounds of: a writer process appending through the batcher (`open_services`), a `ledger project`
worker and a `ledger rebuild`, each started as its own process with `DATABASE_URL` and killed
with SIGKILL at a moment drawn from a printed seed. After restarting (and catching up), the read
tables verify, the write side's state rows equal the fold of its log, and every command a writer
reported as done is in the log exactly once.

A commit whose outcome is unknown is made for real: the appending backend is terminated with
`pg_terminate_backend` while its transaction waits, either on a row lock (before the commit: the
command id says nothing was recorded) or for a synchronous standby that does not exist (after the
commit was written locally: the command id finds it, and the answer is `replayed=True`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from ledger import commands as cmd
from ledger.consistency import check_guild
from ledger.database import EmbeddedPostgres, make_pool
from ledger.errors import DatabaseUnavailable
from ledger.migrations import migrate
from ledger.service import Ledger
from ledger.store import EventStore
from projections import catch_up, verify
from projections.checkpoints import REBUILD_CLASS
from tests.fix_db import LedgerEnv

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(2**32))
G = 6116
DEADLINE = 60.0  # bound on waiting for an external process or backend, not a timing assertion

# A writer: the batcher of `open_services`, 16 commands in flight; prints each command that
# reported an appended outcome, with its event count, as the bot would answer a member.
WRITER = r"""
import asyncio, random, sys
from datetime import UTC, datetime, timedelta
from ledger import commands as cmd
from ledger.runtime import open_services

url, seed, base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
G = 6116
T0 = datetime(2026, 8, 1, tzinfo=UTC)
FUND = cmd.Actor(1, is_moderator=True, is_admin=True)

def command(rng, n):
    cid, at = f"c{base + n}", T0 + timedelta(seconds=n)
    kind = rng.randrange(5)
    if kind == 0:
        return cmd.Transfer(guild_id=G, command_id=cid, at=at, from_id=rng.randint(1, 30),
                            to_id=rng.randint(1, 30), amount=rng.randint(1, 40))
    if kind == 1:
        return cmd.AdminGrant(guild_id=G, command_id=cid, at=at, member_id=rng.randint(1, 30),
                              actor=FUND, lc=rng.randint(1, 200), xp=0, reason="seed")
    if kind == 2:
        return cmd.ClaimDaily(guild_id=G, command_id=cid, member_id=rng.randint(1, 30),
                              at=at + timedelta(days=base + n))
    return cmd.GrantMessageXp(guild_id=G, command_id=cid, member_id=rng.randint(1, 30),
                              channel_id=9, message_id=base + n + 1, entropy=n,
                              at=at + timedelta(minutes=base + n))

async def main():
    rng = random.Random(seed)
    async with open_services(url, max_connections=6) as services:
        async def one(n):
            result = await services.batcher.submit(command(rng, n))
            if getattr(result, "appended", False) and not result.replayed:
                print("OK", result.command_id, len(result.events), flush=True)
        n = 0
        while True:
            await asyncio.gather(*(one(n + k) for k in range(16)))
            n += 16

asyncio.run(main())
"""


def _cli(args: list[str], url: str, data_dir: Path) -> subprocess.Popen[str]:
    """`ledger ARGS` as its own process, on `url`."""
    environ = {**os.environ, "DATABASE_URL": url, "LEDGER_DATA_DIR": str(data_dir)}
    with (data_dir / f"{args[0]}.log").open("a") as log:  # never a pipe that could fill up
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _kill(process: subprocess.Popen[str]) -> bool:
    """SIGKILL `process` if it still runs and reap it; True if this call killed it."""
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=DEADLINE)
    return process.returncode == -signal.SIGKILL


def _read_lines(process: subprocess.Popen[str], into: list[str]) -> None:
    """Collect a writer's acknowledgements as they come (its pipe must never fill up)."""
    assert process.stdout is not None
    for line in process.stdout:
        # A line cut short by the SIGKILL was never an acknowledgement.
        if line.startswith("OK ") and line.endswith("\n"):
            into.append(line)


def _wait(what: str, condition: Callable[[], bool]) -> None:
    """Poll an external process's effect until `condition()` holds (bounded)."""
    give_up = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.02)


def _progress(env: LedgerEnv) -> int:
    return int(env.sql("SELECT coalesce(sum(position), 0) FROM projector_checkpoints")[0][0])  # type: ignore[call-overload]


def _rebuild_locked(env: LedgerEnv) -> bool:
    rows = env.sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
        (REBUILD_CLASS,),
    )
    return bool(rows[0][0])


def test_sigkill_writers_workers_and_rebuilds(env: LedgerEnv, tmp_path: Path) -> None:
    print(f"crash seed {SEED} (CRASH_SEED={SEED} to repeat)", file=sys.stderr)
    rng = random.Random(SEED)
    done: dict[str, int] = {}  # command id -> events, as the writers reported them
    kills = {"writer": 0, "worker": 0, "rebuild": 0}
    for round_ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, env.url, str(SEED + round_), str(100_000 * round_)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        acknowledged: list[str] = []
        reader = threading.Thread(target=_read_lines, args=(writer, acknowledged), daemon=True)
        reader.start()
        worker = _cli(["project"], env.url, tmp_path)
        try:
            # (b) the worker dies once it has moved its checkpoints a random number of times,
            # while the writer keeps appending
            moves, last = rng.randint(1, 4), _progress(env)
            for _ in range(moves):
                _wait("the worker to project", lambda last=last: _progress(env) != last)  # type: ignore[misc]
                last = _progress(env)
            kills["worker"] += _kill(worker)
            # (a) the writer dies after a random number of acknowledged commands
            target = len(acknowledged) + rng.randint(10, 300)
            _wait("the writer to append", lambda: len(acknowledged) >= target)  # noqa: B023
            kills["writer"] += _kill(writer)
        finally:
            _kill(worker)
            _kill(writer)
            reader.join(DEADLINE)
            assert writer.stdout is not None
            writer.stdout.close()
        for line in acknowledged:
            fields = line.split()
            assert len(fields) == 3, f"a writer's acknowledgement is malformed: {line!r}"
            done[fields[1]] = int(fields[2])
        # (c) a rebuild dies at a random moment after it took its lock (in one process, or
        # with a worker process folding half the members, which must not outlive it usefully)
        rebuild = _cli(["rebuild", "--jobs", str(1 + round_ % 2)], env.url, tmp_path)
        try:
            _wait(
                "the rebuild to start",
                lambda rebuild=rebuild: _rebuild_locked(env) or rebuild.poll() is not None,  # type: ignore[misc]
            )
            time.sleep(rng.uniform(0, 0.3))  # the random moment (not a synchronisation)
        finally:
            kills["rebuild"] += _kill(rebuild)
        # a killed client's backend lets go of its locks when it notices; then verify still holds
        _wait("the killed rebuild's backend", lambda: not _rebuild_locked(env))
        assert env.run(verify(env.store.pool)).ok, "a killed process left a read table wrong"

    # restart: a worker catches up, and the rebuild runs to the end this time
    env.run(catch_up(env.store.pool))
    report = env.run(verify(env.store.pool))
    assert report.ok, [d for t in report.tables for d in t.differences]
    rebuilt = _cli(["rebuild", "--jobs", "2"], env.url, tmp_path)
    assert rebuilt.wait(timeout=DEADLINE) == 0, (tmp_path / "rebuild.log").read_text()
    assert env.run(verify(env.store.pool)).ok
    consistency = env.run(check_guild(env.store.pool, G))
    assert consistency.ok, consistency.problems

    # nothing lost, nothing doubled: each acknowledged command once, with all its events
    recorded = dict(
        env.sql(
            "SELECT meta->>'command_id', count(*) FROM events WHERE guild_id = %s "
            "GROUP BY 1 HAVING count(DISTINCT tx) = 1",
            (G,),
        )
    )
    lost = {c: n for c, n in done.items() if recorded.get(c) != n}
    doubled = env.sql(
        "SELECT meta->>'command_id' FROM events WHERE guild_id = %s "
        "GROUP BY 1 HAVING count(DISTINCT tx) > 1",
        (G,),
    )
    print(
        f"crashes: {sum(kills.values())} SIGKILLs {kills}; {len(done)} acknowledged commands, "
        f"{consistency.events} events; lost {len(lost)}, doubled {len(doubled)}",
        file=sys.stderr,
    )
    assert kills["writer"] == kills["worker"] == 3
    assert not lost and not doubled


def _transfer(command_id: str) -> cmd.Transfer:
    return cmd.Transfer(guild_id=G, command_id=command_id, from_id=1, to_id=2, amount=5)


async def _backend_waiting(
    conn: psycopg.AsyncConnection, wait_event: str, append: asyncio.Task[object]
) -> int | None:
    """The pid of the backend running `ledger_append` that waits on `wait_event`, or None if
    the append finished without waiting (bounded polling of another backend's state)."""
    async with asyncio.timeout(DEADLINE):
        while not append.done():
            cur = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = %s "
                "AND query LIKE '%%ledger_append%%' AND pid <> pg_backend_pid()",
                (wait_event,),
            )
            row = await cur.fetchone()
            if row:
                return int(row[0])
            await asyncio.sleep(0.02)
    return None


def _events_of(env_url: str, command_id: str) -> int:
    with psycopg.connect(env_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE meta->>'command_id' = %s", (command_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_connection_killed_before_the_commit_records_nothing(env: LedgerEnv) -> None:
    """The append waits on a row lock; its backend is terminated; the id says: not recorded."""
    env.run(env.ledger.execute(_transfer("warm-up")))  # both members' rows exist

    async def scenario() -> tuple[BaseException | None, bool]:
        holder = await psycopg.AsyncConnection.connect(env.url)
        async with holder:
            await holder.execute(
                "SELECT 1 FROM streams WHERE guild_id = %s AND stream = 1 FOR UPDATE", (G,)
            )  # a transaction holding member 1's row
            append = asyncio.create_task(env.ledger.execute(_transfer("pay-killed")))
            watcher = await psycopg.AsyncConnection.connect(env.url, autocommit=True)
            async with watcher:
                pid = await _backend_waiting(watcher, "transactionid", append)
                assert pid is not None, "the append did not wait for the row lock"
                await watcher.execute("SELECT pg_terminate_backend(%s)", (pid,))
            refused = (await asyncio.gather(append, return_exceptions=True))[0]
            await holder.rollback()
        retried = await env.ledger.execute(_transfer("pay-killed"))  # the member's retry
        return refused if isinstance(refused, BaseException) else None, retried.replayed

    refused, replayed = env.run(scenario())
    assert isinstance(refused, DatabaseUnavailable), refused
    assert "nothing was recorded" in refused.message
    assert not replayed
    assert _events_of(env.url, "pay-killed") == 2  # the retry appended it (sent, received), once


def test_a_connection_killed_after_the_commit_is_resolved_by_the_command_id(
    aio: asyncio.Runner, tmp_path: Path
) -> None:
    """The commit is written but waits for a synchronous standby that never answers (a private
    server: the setting is server-wide); the backend is terminated there. The transaction has
    committed locally, the client only sees its connection die: the command id finds it."""
    server = EmbeddedPostgres(tmp_path / "db")
    url = server.start()

    async def scenario() -> tuple[object, bool, int]:
        admin = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with admin:
            await migrate(admin)
            async with make_pool(url, min_size=1, max_size=2, timeout=10) as pool:
                ledger = Ledger(EventStore(pool))
                await ledger.execute(_transfer("warm-up"))
                await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
                await admin.execute("SELECT pg_reload_conf()")
                # The reload reaches the sessions and the checkpointer (which tells commits to
                # wait) a little later: until then a commit answers at once; try again.
                for attempt in itertools.count():
                    command_id = f"pay-unknown-{attempt}"
                    append = asyncio.create_task(ledger.execute(_transfer(command_id)))
                    pid = await _backend_waiting(admin, "SyncRep", append)
                    if pid is not None:
                        break
                    assert attempt < 500, "commits never waited for the standby"
                # terminated while it waits: committed locally, never acknowledged. (Resetting
                # the setting first would release the wait and let the commit answer.)
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
                await admin.execute("SELECT pg_reload_conf()")
                first = (await asyncio.gather(append, return_exceptions=True))[0]
                again = await ledger.execute(_transfer(command_id))  # a retry: same id
        return first, again.replayed, _events_of(url, command_id)

    try:
        first, replayed_again, events = aio.run(scenario())
    finally:
        server.stop()
    print(
        "commit outcome unknown (backend terminated in SyncRep): first answer "
        f"{type(first).__name__}{' replayed' if getattr(first, 'replayed', False) else ''}, "
        f"retry replayed={replayed_again}, events {events}",
        file=sys.stderr,
    )
    # Resolved through the command id: either at once (the commit was visible when the
    # service looked it up) or by the retry, which finds it; never appended a second time.
    if isinstance(first, BaseException):
        assert isinstance(first, DatabaseUnavailable), first
    else:
        assert getattr(first, "replayed", False), first
    assert replayed_again
    assert events == 2  # sent and received, once
