"""A real outage: the server stops mid-traffic and comes back; no XP grant is lost or doubled,
and money-moving commands fail fast meanwhile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ledger import commands as cmd
from ledger.database import EmbeddedPostgres, make_pool
from ledger.errors import DatabaseUnavailable
from ledger.ingest import BatchIngestor, CommandBatcher, replay_spool
from ledger.migrations import migrate
from ledger.service import Outcome
from ledger.spool import Spool
from ledger.store import EventStore

G = 9009
T0 = datetime(2026, 4, 1, tzinfo=UTC)


def grant(n: int) -> cmd.GrantMessageXp:
    return cmd.GrantMessageXp(
        guild_id=G,
        command_id=f"xp{n}",
        member_id=1 + n % 20,
        channel_id=3,
        message_id=10_000 + n,
        at=T0 + timedelta(seconds=61 * n),
        entropy=n,
    )


async def replay_until_back(spool: Spool, ingestor: BatchIngestor, deadline: float = 30) -> int:
    """Retry the replay while the pool reconnects (bounded: an external server restart)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        try:
            return await replay_spool(spool, ingestor)
        except DatabaseUnavailable:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.1)


def test_grants_during_an_outage_land_exactly_once(aio: asyncio.Runner, tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "db")
    url = server.start()
    spool = Spool(tmp_path / "spool")

    async def scenario() -> tuple[list[object], list[object], BaseException | None, int]:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        async with conn:
            await migrate(conn)
        pool = make_pool(url, min_size=1, max_size=4, timeout=1.0)
        await pool.open(wait=True)
        store = EventStore(pool)
        ingestor = BatchIngestor(store)
        batcher = CommandBatcher(ingestor, spool=spool)
        runner = asyncio.create_task(batcher.run())
        try:
            before = await asyncio.gather(*(batcher.submit(grant(n)) for n in range(30)))
            await asyncio.to_thread(server.stop)  # the outage
            during = await asyncio.gather(*(batcher.submit(grant(n)) for n in range(30, 60)))
            refused: BaseException | None = None
            try:
                await batcher.execute(
                    cmd.Transfer(guild_id=G, command_id="pay", from_id=1, to_id=2, amount=1)
                )
            except DatabaseUnavailable as exc:
                refused = exc
            await asyncio.to_thread(server.start)  # back, on the same socket
            # idle connections died with the server; the pool reconnects with its own backoff,
            # and the replayer retries until it gets through (as run_spool_replayer does)
            await pool.check()
            replayed = await replay_until_back(spool, ingestor)
            # a second replay (a crash before the spool file was removed) changes nothing
            spool.append([grant(n) for n in range(30, 60)])
            await replay_spool(spool, ingestor)
            return list(before), list(during), refused, replayed
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await pool.close()

    try:
        before, during, refused, replayed = aio.run(scenario())
        with psycopg.connect(url) as conn:
            counts = dict(
                conn.execute(
                    "SELECT meta->>'command_id', count(*) FROM events "
                    "WHERE type = 'xp_granted' GROUP BY 1"
                ).fetchall()
            )
    finally:
        server.stop()
    assert all(isinstance(r, Outcome) and r.appended for r in before)
    assert all(isinstance(r, Outcome) and r.note == "spooled" for r in during)
    assert isinstance(refused, DatabaseUnavailable) and "try again" in refused.message
    assert replayed == 30
    assert counts == {f"xp{n}": 1 for n in range(60)}  # every grant once: none lost, none doubled
