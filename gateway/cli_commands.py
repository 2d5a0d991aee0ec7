"""The CLI's subcommands beyond `db` and `migrate`: their arguments and async handlers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg

from gateway.bench.baselines import BaselineFailed
from gateway.bench.runner import render_markdown, render_text, run_bench
from gateway.progress import Progress
from gateway.simulation import SimulationConfig, simulate
from ledger.chain import seal, verify_chain
from ledger.database import EmbeddedPostgres, Settings, resolve_app_url, resolve_database
from ledger.ingest import CommandBatcher
from ledger.migrations import migrate
from ledger.runtime import Services, open_services
from projections import catch_up, queries, verify
from projections.leaderboard import leaderboard

Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]

EXTRA_COMMANDS = {
    "demo": "simulate a busy guild on the embedded database, project it, verify it",
    "bench": "benchmarks beside raw PostgreSQL and the eventsourcing peer, in one run",
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Declare the options of subcommand `name`."""
    if name == "demo":
        parser.add_argument("--members", type=int, default=500, help="members (default 500)")
        parser.add_argument("--events", type=int, default=50_000, help="events (default 50000)")
        parser.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
        parser.add_argument("--writers", type=int, default=4, help="concurrent writers")
        parser.add_argument(
            "--guild", type=int, default=0, help="guild id (default: a new one each run)"
        )

    if name == "bench":
        parser.add_argument(
            "--quick", action="store_true", help="a small, fast run (the test suite's smoke test)"
        )
        parser.add_argument("--only", help="comma-separated workloads, e.g. P1,P3")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--markdown", metavar="FILE", help="also write a Markdown table")


@contextlib.asynccontextmanager
async def app_services(
    settings: Settings, max_connections: int = 20, spool_dir: Path | None = None
) -> AsyncIterator[Services]:
    """The database in use (started if embedded), migrated as its owner, with services that
    run as the least-privileged application role."""
    url = resolve_database(settings)
    async with open_services(
        url, max_connections, spool_dir, app_url=resolve_app_url(settings, url)
    ) as services:
        yield services


async def migrate_database(settings: Settings) -> list[str]:
    """Apply pending migrations to the database in use."""
    url = resolve_database(settings)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    async with conn:
        return await migrate(conn)


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    """Simulated traffic -> projections -> leaderboard and summary -> verify."""
    if args.members < 2 or args.events < 1 or args.writers < 1:
        print("error: --members >= 2, --events >= 1 and --writers >= 1", file=sys.stderr)
        return 2
    guild_id = args.guild or random.randint(10**17, 10**18)
    started = time.monotonic()
    print("starting PostgreSQL ...", file=sys.stderr)
    config = SimulationConfig(
        guild_id=guild_id,
        members=args.members,
        events=args.events,
        seed=args.seed,
        writers=args.writers,
    )
    async with app_services(settings) as services:
        print(f"simulating guild {guild_id}: {args.members} members, ~{args.events} events")
        batchers = [CommandBatcher(services.ingestor) for _ in range(args.writers)]
        runners = [asyncio.create_task(b.run()) for b in batchers]
        try:
            with Progress("traffic", "events") as progress:
                report = await simulate(services, batchers, config, progress.update)
        finally:
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
        elapsed = time.monotonic() - started
        print(
            f"{report.commands} commands, {report.events} events appended in {elapsed:.1f}s; "
            f"refused: {dict(report.refused)}; no-op: {dict(report.noop)}; "
            f"not forwarded (bots, webhooks): {report.ignored}"
        )
        return await _project_and_verify(services, guild_id)


async def _project_and_verify(services: Services, guild_id: int) -> int:
    """Catch the projectors up, show the guild, verify tables and chain; 1 on a mismatch."""
    began = time.monotonic()
    applied = await catch_up(services.pool)
    print(f"projected {applied:,} events in {time.monotonic() - began:.1f}s")
    board = await leaderboard(services.pool, guild_id, "xp", "all", limit=10)
    print(f"\nXP leaderboard ({board.members} members):")
    for entry in board.entries:
        profile = await queries.profile(services.pool, guild_id, entry.member_id)
        level = profile.level if profile else 0
        print(f"  #{entry.rank:<3} <@{entry.member_id}>  level {level:>3}  {entry.score:>8,} XP")
    money = await queries.economy(services.pool, guild_id)
    print(
        f"\neconomy: {money.wallets} wallets, {money.total_balance:,} LC in wallets = "
        f"{money.minted:,} minted - {money.burned:,} burned; {money.transferred:,} LC transferred"
    )
    began = time.monotonic()
    report = await verify(services.pool)
    await seal(services.pool)
    chain = await verify_chain(services.pool, guild_id)
    digest = hashlib.sha256("".join(t.digest for t in report.tables).encode()).hexdigest()
    print(
        f"\nverify ({time.monotonic() - began:.1f}s): {len(report.tables)} tables, "
        f"{report.events:,} events replayed, digest {digest[:32]}"
    )
    for table in report.tables:
        if not table.ok:
            print(f"  MISMATCH in {table.table}: {table.difference_count} rows differ")
    print(f"hash chain: {'ok' if chain.ok else 'BROKEN'} ({chain.events:,} events sealed)")
    ok = report.ok and chain.ok and money.total_balance == money.minted - money.burned
    print("verify: OK" if ok else "verify: MISMATCH")
    return 0 if ok else 1


async def bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmarks on a private embedded server (or DATABASE_URL)."""
    only = {w.strip().upper() for w in args.only.split(",")} if args.only else None
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as scratch:
        data_dir = None if settings.database_url else Path(scratch)
        if settings.database_url:
            url = settings.database_url
        else:
            print("starting a private PostgreSQL for the benchmark ...", file=sys.stderr)
            url = EmbeddedPostgres(Path(scratch)).start()

        def say(text: str) -> None:
            print(text, file=sys.stderr)

        try:
            with _cancelled_by_sigterm():
                report = await run_bench(url, data_dir, quick=args.quick, only=only, say=say)
        except BaselineFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            print("bench: stopped", file=sys.stderr)
            return 128 + signal.SIGTERM
        finally:
            # Also when a workload fails or the run is stopped (Ctrl-C, SIGTERM): a server
            # left running on the removed scratch directory would keep its disk space.
            if not settings.database_url:
                EmbeddedPostgres(Path(scratch)).stop()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(render_text(report))
    if args.markdown:
        command = "uv run --group bench ledger bench" + (" --quick" if args.quick else "")
        await asyncio.to_thread(Path(args.markdown).write_text, render_markdown(report, command))
    return 0


@contextlib.contextmanager
def _cancelled_by_sigterm() -> Iterator[None]:
    """Turn SIGTERM into a cancellation of the running task, so that cleanup runs as on Ctrl-C
    (by default SIGTERM ends the process at once)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    handled = True
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except NotImplementedError:  # no loop signal handlers on this platform
        handled = False
    try:
        yield
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)


HANDLERS: dict[str, Handler] = {"demo": demo, "bench": bench}
