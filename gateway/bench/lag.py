"""P7: projection lag while P1-style transfers arrive at half the measured P1 rate.

The projection worker runs as its own process (`python -m gateway.bench.lag_worker`, the
`run_workers` loop that `ledger project` runs, without the chain sealer), as in production where
the bot and the workers are separate processes. This process submits transfers through the
group-commit path at a fixed rate (open loop: a slow system does not slow the offered load) and
samples the lag every 50 ms: the age of the oldest event the slowest projector has not applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable

from psycopg_pool import AsyncConnectionPool

from gateway.bench.checks import cross_check, joined, projection_invariants, write_side
from gateway.bench.model import Result
from gateway.bench.synthetic import log_size
from gateway.bench.workloads import Measured, random_transfer
from ledger.errors import LedgerError
from ledger.runtime import Services
from projections import catch_up, status
from projections.projectors import PROJECTORS

Say = Callable[[str], None]

# 0 when the slowest projector has applied everything committed, else the age of the first
# event after its checkpoint (recorded_at is its appending transaction's start).
LAG = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - e.recorded_at), 0)::float8
  FROM (SELECT tx, position FROM projector_checkpoints WHERE projector = ANY(%s)
         ORDER BY tx, position LIMIT 1) AS c
  LEFT JOIN LATERAL (
       SELECT recorded_at FROM events e WHERE (e.tx, e.position) > (c.tx, c.position)
        ORDER BY e.tx, e.position LIMIT 1) AS e ON true
"""
# Beyond this many events `verify` (a replay of the whole log) takes minutes: P7 then checks its
# own guild against the state rows and the log (P5 has just verified everything before it).
REPLAY_LIMIT = 2_000_000
SAMPLE_INTERVAL = 0.05
MAX_IN_FLIGHT = 2_000
MEMBERS = 1_000


async def lag_seconds(pool: AsyncConnectionPool) -> float:
    """How far behind the slowest projector is now, in seconds."""
    async with pool.connection() as conn:
        cur = await conn.execute(LAG, (list(PROJECTORS),))
        row = await cur.fetchone()
    return float(row[0]) if row else 0.0


async def _sample(pool: AsyncConnectionPool, into: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        into.append(await lag_seconds(pool))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL)


async def paced_transfers(
    services: Services, guild_id: int, rate: float, seconds: float
) -> tuple[int, int, int]:
    """Submit 1-LC transfers at `rate`/s for `seconds`; return (done, refused, skipped)."""
    rng = random.Random(guild_id)
    done = refused = skipped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def transfer(n: int) -> None:
        nonlocal done, refused
        command = random_transfer(rng, guild_id, MEMBERS, f"p7-{n}")
        try:
            await services.batcher.execute(command)
            done += 1
        except LedgerError:
            refused += 1

    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            if len(tasks) >= MAX_IN_FLIGHT:
                skipped += 1
            else:
                task = asyncio.create_task(transfer(sent))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return done, refused, skipped


async def _start_worker(url: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "DATABASE_URL": url}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.bench.lag_worker", env=env
    )


async def _wait_leased(pool: AsyncConnectionPool, worker: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while not all(s.leased for s in await status(pool)):
        if worker.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("the projection worker did not claim the projectors")
        await asyncio.sleep(0.1)


async def p7_lag(
    services: Services,
    url: str,
    guild_id: int,
    p1_rate: float,
    seconds: float,
    say: Say,
) -> Result:
    """P7: lag percentiles under load, then the invariants."""
    pool = services.pool
    rate = p1_rate / 2
    say("P7: projecting everything so far (untimed) ...")
    await catch_up(pool)
    say("P7: starting a projection worker process ...")
    worker = await _start_worker(url)
    lags: list[float] = []
    try:
        await _wait_leased(pool, worker)
        say(f"P7: {rate:,.0f} transfers/s for {seconds:g} s, lag sampled every 50 ms ...")
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(pool, lags, stop))
        started = time.monotonic()
        done, refused, skipped = await paced_transfers(services, guild_id, rate, seconds)
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        drain_started = time.monotonic()
        for _ in range(int(60 / SAMPLE_INTERVAL)):  # until the worker has caught up
            if await lag_seconds(pool) == 0:
                break
            await asyncio.sleep(SAMPLE_INTERVAL)
        drained = time.monotonic() - drain_started
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 30)
        except TimeoutError:
            worker.kill()
            await worker.wait()
    measured = Measured(len(lags), sum(lags), lags)
    p99 = measured.percentile(0.99) or 0.0
    achieved = (done + refused) / elapsed
    say("P7: checking the invariants ...")
    replay = await log_size(pool) <= REPLAY_LIMIT
    checks = {"verify": await projection_invariants(pool)} if replay else {}
    checks["state rows"] = await cross_check(pool, guild_id)
    checks["write side"] = await write_side(pool, guild_id)
    return Result(
        "P7",
        "projection lag under P1-style load at half the P1 rate",
        p99,
        "ms p99 lag",
        "p99 < 500 ms",
        p1_rate,
        "P1 transfers/s (ratio: offered load / P1)",
        achieved / p1_rate,
        p99 < 500,
        measured.percentile(0.5),
        p99,
        f"{achieved:,.0f} transfers/s offered ({refused} refused, {skipped} skipped), "
        f"{len(lags)} samples, max {1000 * max(lags, default=0):.0f} ms, "
        f"drained {1000 * drained:.0f} ms after; worker in its own process",
        joined(checks),
    )
