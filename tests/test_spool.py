"""The XP spool: durable while PostgreSQL is away, replayed exactly once when it is back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger import commands as cmd
from ledger.database import make_pool
from ledger.errors import DatabaseUnavailable
from ledger.ingest import BatchIngestor, CommandBatcher, replay_spool
from ledger.service import Outcome
from ledger.spool import Spool, read_file
from ledger.store import EventStore
from tests.fix_db import LedgerEnv

G = 8080
T0 = datetime(2026, 2, 2, tzinfo=UTC)
DEAD = "host=127.0.0.1 port=9 dbname=nothing connect_timeout=1"


def message(n: int) -> cmd.GrantMessageXp:
    return cmd.GrantMessageXp(
        guild_id=G,
        command_id=f"m{n}",
        member_id=1 + n % 3,
        channel_id=4,
        message_id=500 + n,
        at=T0.replace(minute=n),
        entropy=n,
    )


def test_spool_survives_a_torn_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([message(1), message(2)])
    with spool.active.open("ab") as handle:
        handle.write(b'{"kind":"message","command":{"guild_id":')  # crash mid-write
    assert [c.command_id for c in read_file(spool.active)] == ["m1", "m2"]
    assert spool.size() == 2


def test_outage_spools_xp_and_fails_money_fast(aio: asyncio.Runner, tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    async def scenario() -> tuple[list[object], BaseException | None]:
        pool = make_pool(DEAD, min_size=0, max_size=2, timeout=0.5)
        await pool.open(wait=False)
        batcher = CommandBatcher(BatchIngestor(EventStore(pool)), spool=spool)
        runner = asyncio.create_task(batcher.run())
        try:
            xp = await asyncio.gather(*(batcher.submit(message(n)) for n in range(5)))
            error: BaseException | None = None
            try:
                await batcher.execute(
                    cmd.Transfer(guild_id=G, command_id="pay", from_id=1, to_id=2, amount=5)
                )
            except DatabaseUnavailable as exc:
                error = exc
            return list(xp), error
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await pool.close()

    results, error = aio.run(scenario())
    assert all(isinstance(r, Outcome) and r.note == "spooled" for r in results)
    assert isinstance(error, DatabaseUnavailable)
    assert sorted(c.command_id for c in read_file(spool.active)) == [f"m{n}" for n in range(5)]


def test_replay_lands_every_grant_once(env: LedgerEnv, tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    grants = [message(n) for n in range(6)]
    spool.append(grants)
    ingestor = BatchIngestor(env.store)
    appended = env.run(replay_spool(spool, ingestor))
    assert appended == 6 and spool.pending_files() == []
    assert env.sql("SELECT count(*) FROM events WHERE type = 'xp_granted'")[0][0] == 6
    # the same grants spooled again (a crash before the file was removed) change nothing
    spool.append(grants)
    assert env.run(replay_spool(spool, ingestor)) == 0
    assert env.sql("SELECT count(*) FROM events WHERE type = 'xp_granted'")[0][0] == 6


@pytest.mark.parametrize("torn", [False, True])
def test_interrupted_replay_is_resumed(env: LedgerEnv, tmp_path: Path, torn: bool) -> None:
    spool = Spool(tmp_path)
    spool.append([message(n) for n in range(3)])
    taken = spool.take()  # a replay started and the process died before finishing
    assert len(taken) == 1 and not spool.active.exists()
    spool.append([message(n) for n in range(3, 5)])
    if torn:
        with taken[0].open("ab") as handle:
            handle.write(b"{")
    assert env.run(replay_spool(spool, BatchIngestor(env.store))) == 5
    assert spool.pending_files() == []
