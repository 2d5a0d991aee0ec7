"""A real database outage under continuous XP traffic, through `open_services`.

A private embedded PostgreSQL (its own data directory, not the session's shared server) is
stopped while grants keep arriving, and started again on the same data directory. Meanwhile:
XP grants are spooled and fsync'd (`note="spooled"`), money-moving commands fail fast with
`DatabaseUnavailable` and a message saying what to do, nothing waits longer than the pool's
timeout, and the services keep running. Afterwards every grant is in the log exactly once:
none lost (a spooled grant replayed after newer grants of the same member must still count),
none doubled (a batch that committed just as the server went away is spooled too, and its
replay is answered from the command ids).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ledger import commands as cmd
from ledger import spool as spool_module
from ledger.database import EmbeddedPostgres
from ledger.errors import DatabaseUnavailable, LedgerError
from ledger.ingest import BatchIngestor, CommandBatcher, Result
from ledger.runtime import Services, open_services
from ledger.service import Outcome
from ledger.spool import Spool
from tests.fix_db import LedgerEnv

G = 7007
T0 = datetime(2026, 5, 1, tzinfo=UTC)
MEMBERS = 7
POOL_TIMEOUT = 1.5  # seconds a command may wait for a connection while the server is away
HANG_GUARD = 60.0  # a bound against hangs, not a timing assertion
SEED = int(os.environ.get("OUTAGE_SEED") or random.SystemRandom().randrange(2**32))


def grant(n: int) -> cmd.GrantMessageXp:
    """The n-th message: members take turns, each one's messages 7 minutes apart, so applied
    in order every one of them earns XP (the cooldown is a minute)."""
    return cmd.GrantMessageXp(
        guild_id=G,
        command_id=f"msg-{n}",
        member_id=1 + n % MEMBERS,
        channel_id=3,
        message_id=100_000 + n,
        at=T0 + timedelta(seconds=61 * n),
        entropy=n,
    )


class Traffic:
    """Submits grants at a steady pace until stopped; counts answers and wakes waiters."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.answers: dict[int, Result | BaseException] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()
        self.changed = asyncio.Event()
        self.sent = 0

    def count(self, note: str | None = None, after: int = -1) -> int:
        """Grants after `after` answered as appended (note None) or with `note`."""
        return sum(
            1
            for n, answer in self.answers.items()
            if n > after
            and isinstance(answer, Outcome)
            and (answer.note == note if note is not None else answer.appended)
        )

    async def until(self, condition: str, predicate: object) -> None:
        """Wait (bounded) until `predicate()` holds; re-checked whenever an answer arrives."""
        assert callable(predicate)
        async with asyncio.timeout(HANG_GUARD):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def _one(self, n: int) -> None:
        try:
            self.answers[n] = await self.services.batcher.submit(grant(n))
        except BaseException as exc:  # recorded and asserted on: a grant must never fail
            self.answers[n] = exc
        self.changed.set()

    async def run(self, pace: float = 0.004) -> None:
        """Send one grant every `pace` seconds (pacing the load, not synchronising)."""
        while not self.stop.is_set():
            self.tasks.append(asyncio.create_task(self._one(self.sent)))
            self.sent += 1
            await asyncio.sleep(pace)
        await asyncio.gather(*self.tasks)


def test_xp_survives_a_real_server_stop(
    aio: asyncio.Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    print(f"outage seed {SEED} (OUTAGE_SEED={SEED} to repeat)", file=sys.stderr)
    rng = random.Random(SEED)
    stop_after, spool_at_least, fresh_after = rng.randint(10, 60), rng.randint(20, 80), 25
    server = EmbeddedPostgres(tmp_path / "db")
    url = server.start()
    fsyncs = Counter[str]()
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs["calls"] += 1
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync)

    async def scenario() -> dict[str, object]:
        async with open_services(url, max_connections=4, spool_dir=tmp_path / "spool") as svc:
            # open_services uses the default pool timeout; a shorter one keeps the test brisk.
            svc.pool.timeout = POOL_TIMEOUT
            traffic = Traffic(svc)
            producer = asyncio.create_task(traffic.run())
            await traffic.until("appended", lambda: traffic.count() >= stop_after)

            await asyncio.to_thread(server.stop)  # the outage, mid-traffic
            stopped_at = traffic.sent
            await traffic.until("spooled", lambda: traffic.count("spooled") >= spool_at_least)
            assert svc.spool is not None
            on_disk = await asyncio.to_thread(svc.spool.size)
            spooled_now = traffic.count("spooled")
            # money-moving commands fail fast with a clear message; nothing is spooled for them
            money = [
                cmd.Transfer(guild_id=G, command_id="pay", from_id=1, to_id=2, amount=5),
                cmd.ClaimDaily(guild_id=G, command_id="daily", member_id=3),
            ]
            async with asyncio.timeout(HANG_GUARD):  # each gives up after the pool timeout
                refusals = await asyncio.gather(
                    *(run(c) for c in money for run in (svc.ledger.execute, svc.batcher.execute)),
                    return_exceptions=True,
                )

            # Back on the same data directory. The embedded server listens on a Unix socket in
            # its data directory, so the URL (and the services' pool) stays valid: the pool
            # drops the dead connections and reconnects by itself. Were the URL different (a
            # server on another socket or port), the services would have to be reopened on it.
            back = await asyncio.to_thread(server.start)
            assert back == url
            restarted_at = traffic.sent
            await traffic.until("fresh", lambda: traffic.count(after=restarted_at) >= fresh_after)
            traffic.stop.set()
            await producer
            # Spooled grants are replayed before any newer grant is appended, so once fresh
            # grants have landed after the restart, the spool is already empty.
            assert not await asyncio.to_thread(svc.spool.pending_files)
            return {
                "answers": traffic.answers,
                "sent": traffic.sent,
                "stopped_at": stopped_at,
                "on_disk": on_disk,
                "spooled_now": spooled_now,
                "refusals": refusals,
            }

    try:
        found = aio.run(scenario())
        with psycopg.connect(url) as conn:
            counts = dict(
                conn.execute(
                    "SELECT meta->>'command_id', count(*) FROM events "
                    "WHERE type = 'xp_granted' GROUP BY 1"
                ).fetchall()
            )
            money = conn.execute(
                "SELECT count(*) FROM events WHERE meta->>'command_id' IN ('pay', 'daily')"
            ).fetchone()
    finally:
        server.stop()

    answers = found["answers"]
    assert isinstance(answers, dict)
    failed = {n: a for n, a in answers.items() if not isinstance(a, Outcome)}
    assert not failed, f"grants that failed instead of being spooled: {failed}"
    spooled = [n for n, a in answers.items() if a.note == "spooled"]
    sent = found["sent"]
    assert isinstance(sent, int)
    print(
        f"outage: {sent} grants sent, {len(spooled)} spooled while the server was down, "
        f"{fsyncs['calls']} fsyncs; lost {sum(1 for n in range(sent) if f'msg-{n}' not in counts)}"
        f", doubled {sum(1 for c in counts.values() if c > 1)}",
        file=sys.stderr,
    )
    assert spooled
    assert found["on_disk"] >= found["spooled_now"]  # type: ignore[operator]
    assert fsyncs["calls"] >= 1
    refusals = found["refusals"]
    assert isinstance(refusals, list) and len(refusals) == 4
    assert all(isinstance(r, DatabaseUnavailable) for r in refusals), refusals
    assert all(isinstance(r, LedgerError) and "try again" in r.message.lower() for r in refusals)
    assert money == (0,)
    # every grant exactly once: none lost, none doubled
    assert counts == {f"msg-{n}": 1 for n in range(sent)}


def test_a_spool_left_by_a_crash_is_replayed_before_newer_grants(
    env: LedgerEnv, tmp_path: Path
) -> None:
    """Grants spooled before a crash, then newer grants of the same members after the restart:
    the old ones are appended first, so each earns its XP (no cooldown from a newer grant)."""
    spool = Spool(tmp_path / "spool")
    spool.append([grant(n) for n in range(MEMBERS * 3)])  # what the crashed process left
    newer = [grant(n) for n in range(MEMBERS * 3, MEMBERS * 6)]

    async def restarted() -> list[Result]:
        batcher = CommandBatcher(BatchIngestor(env.store), spool=spool)
        runner = asyncio.create_task(batcher.run())
        try:
            return list(await asyncio.gather(*(batcher.submit(g) for g in newer)))
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    results = env.run(restarted())
    assert all(isinstance(r, Outcome) and r.appended for r in results)
    assert not spool.pending_files()
    counts = dict(
        env.sql(
            "SELECT meta->>'command_id', count(*) FROM events WHERE type = 'xp_granted' GROUP BY 1"
        )
    )
    assert counts == {f"msg-{n}": 1 for n in range(MEMBERS * 6)}
