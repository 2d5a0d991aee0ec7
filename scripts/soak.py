"""Soak: mixed guild traffic at a steady rate with projection workers running, then verify.

    uv run python scripts/soak.py --minutes 10 --rate 300

Runs against a private embedded PostgreSQL in a temporary directory (or DATABASE_URL), on this
machine only, for a bounded time, and stops by itself. Prints, every `--every` seconds, the
process's RSS, events appended, unexpected errors and projection lag; at the end, lag p50/p99,
the verify result and the hash chain. Exit 1 on an unexpected error or a failed verify.
Not run in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.bench.projection_workloads import rss_bytes
from gateway.simulation import SimulationConfig, Traffic, dispatch, generate, setup_commands
from ledger.chain import run_sealer, seal, verify_chain
from ledger.database import EmbeddedPostgres
from ledger.errors import LedgerError
from ledger.runtime import open_services
from projections import catch_up, run_workers, status, verify


async def soak(url: str, minutes: float, rate: float, every: float) -> int:
    """Drive the load; return the exit code."""
    guild = random.randint(10**17, 10**18)
    config = SimulationConfig(guild_id=guild, members=2000, events=10**9, seed=guild % 1000)
    unexpected: list[str] = []
    lags: list[float] = []
    refused = 0
    async with open_services(url, max_connections=24) as services:
        for setting in setup_commands(config):
            await services.ledger.execute(setting)
        stop = asyncio.Event()
        background = [
            asyncio.create_task(run_workers(services.pool, stop=stop)),
            asyncio.create_task(run_sealer(services.pool, stop)),
        ]
        commands = generate(config)
        pending: set[asyncio.Task[None]] = set()

        async def one(item: Traffic) -> None:
            nonlocal refused
            try:
                results = await dispatch(services, item) or []  # through the bot's handlers
                refused += sum(isinstance(r, LedgerError) for r in results)
            except LedgerError:
                refused += 1
            except Exception as exc:
                unexpected.append(f"{type(exc).__name__}: {exc}")

        started = time.monotonic()
        deadline = started + 60 * minutes
        next_report = started + every
        next_sample = started + 1.0
        sent = 0
        rss_start = rss_bytes()
        rss_middle: int | None = None
        print(
            f"soak: guild {guild}, {rate:.0f} commands/s for {minutes} min, RSS "
            f"{rss_start / 2**20:.0f} MiB",
            flush=True,
        )
        while (now := time.monotonic()) < deadline:
            due = int((now - started) * rate) - sent
            for _ in range(max(0, min(due, int(rate)))):
                task = asyncio.create_task(one(next(commands)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if now >= next_sample:  # lag sampled every second
                rows = await status(services.pool)
                lags.append(max((r.lag_seconds for r in rows), default=0.0))
                next_sample += 1.0
            if rss_middle is None and now - started >= 30 * minutes:
                rss_middle = rss_bytes()
            if now >= next_report:
                lag = lags[-1] if lags else 0.0
                print(
                    f"{now - started:7.0f}s sent {sent:>8} appended "
                    f"{services.store.appended_events:>9} RSS "
                    f"{rss_bytes() / 2**20:6.0f} MiB lag {lag:6.3f}s "
                    f"unexpected {len(unexpected)} in-flight {len(pending)}",
                    flush=True,
                )
                next_report += every
            await asyncio.sleep(0.01)  # pacing the generator, not synchronisation
        await asyncio.gather(*list(pending))
        rss_end = rss_bytes()  # end of the load (verify below folds everything)
        stop.set()
        await asyncio.gather(*background)
        await catch_up(services.pool)
        await seal(services.pool)
        report = await verify(services.pool)
        chain = await verify_chain(services.pool, guild)
        rss_verified = rss_bytes()
        appended = services.store.appended_events
    ordered = sorted(lags or [0.0])
    print(
        f"done: {sent} commands, {refused} refused by the rules, {len(unexpected)} unexpected "
        f"errors; {appended} events appended; RSS start/middle/end {rss_start / 2**20:.0f} / "
        f"{(rss_middle or rss_end) / 2**20:.0f} / {rss_end / 2**20:.0f} MiB "
        f"({rss_verified / 2**20:.0f} MiB after verify); lag "
        f"({len(lags)} samples) p50 {statistics.median(ordered):.3f}s p99 "
        f"{ordered[int(0.99 * (len(ordered) - 1))]:.3f}s max {ordered[-1]:.3f}s; verify "
        f"{'OK' if report.ok else 'MISMATCH'} ({report.events} events); chain "
        f"{'OK' if chain.ok else 'BROKEN'}"
    )
    for line in unexpected[:20]:
        print("  " + line)
    return 0 if report.ok and chain.ok and not unexpected else 1


def main() -> int:
    """Parse arguments, start a private server unless DATABASE_URL is set, soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=300, help="commands per second")
    parser.add_argument("--every", type=float, default=30, help="report interval, seconds")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="ledger-soak-") as scratch:
        server = None if url else EmbeddedPostgres(Path(scratch))
        if server:
            url = server.start()
        try:
            assert url
            return asyncio.run(soak(url, args.minutes, args.rate, args.every))
        finally:
            if server:
                server.stop()


if __name__ == "__main__":
    sys.exit(main())
