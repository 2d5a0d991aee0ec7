"""The projection workloads of `ledger bench`: catch-up (P4), rebuild (P5), queries (P6).

All three work on one big synthetic guild (`gateway.bench.synthetic`): P4 gives it a backlog,
P5 grows it to the full log (and a million members) and rebuilds every projection from it, P6
queries it. Each reports beside a raw PostgreSQL figure from the same run: reading the same
events in delivery order (P4, P5), a primary-key lookup (P6). P7 (lag under load) is in
`gateway.bench.lag`.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from gateway.bench.checks import cross_check, joined, projection_invariants, write_side
from gateway.bench.model import Result
from gateway.bench.rebuild_worker import Finished
from gateway.bench.synthetic import SyntheticGuild, log_size
from gateway.bench.workloads import T0, Measured
from ledger import commands as cmd
from ledger.runtime import Services
from ledger.service import Outcome
from ledger.store import Checkpoint
from projections import RebuildReport, catch_up
from projections.leaderboard import leaderboard, rank
from projections.periods import ALL_TIME_CODE, BOARD_CODES
from projections.projectors import PROJECTORS
from projections.queries import balance, profile

Say = Callable[[str], None]

SLOWEST_CHECKPOINT = """
SELECT tx::text, position FROM projector_checkpoints WHERE projector = ANY(%s)
 ORDER BY tx, position LIMIT 1
"""
RAW_READ = """
COPY (SELECT tx, position, guild_id, type, data FROM events
       WHERE (tx, position) > (%s::text::xid8, %s) ORDER BY tx, position LIMIT %s) TO STDOUT
"""
BUSY_SPACING = timedelta(hours=3)  # between a busy member's grants: 50 grants span a week
RAW_READ_SAMPLE = 2_000_000  # rows read for the raw baseline (it scales linearly)
RAW_LOOKUP = "SELECT version, state FROM streams WHERE guild_id = %s AND stream = %s"
STATE_FIGURES = """
SELECT (state->>'balance')::int8, (state->>'xp')::int8 FROM streams
 WHERE guild_id = %s AND stream = %s
"""
SCORES_ABOVE = """
SELECT count(*) FROM leaderboard_scores
 WHERE guild_id = %s AND board = %s AND period = %s AND score > %s
"""


async def slowest_checkpoint(pool: AsyncConnectionPool) -> Checkpoint:
    """The checkpoint of the projector furthest behind."""
    async with pool.connection() as conn:
        cur = await conn.execute(SLOWEST_CHECKPOINT, (list(PROJECTORS),))
        row = await cur.fetchone()
    return Checkpoint(int(row[0]), row[1]) if row else Checkpoint()


async def raw_read_rate(pool: AsyncConnectionPool, start: Checkpoint, rows: int) -> float:
    """Rows/s of PostgreSQL streaming `rows` events after `start` in delivery order (COPY)."""
    async with pool.connection() as conn:
        started = time.perf_counter()
        cur = conn.cursor()
        async with cur.copy(RAW_READ, (str(start.tx), start.position, rows)) as copy:
            async for _ in copy:
                pass
        return rows / (time.perf_counter() - started)


async def _timed_catch_up(
    services: Services, start: Checkpoint, say: Say
) -> tuple[int, float, float]:
    """Catch every projector up; return (events, seconds, raw read rows/s of the same stretch)."""
    pool = services.pool
    say("P4: catch_up (all projectors) ...")
    started = time.perf_counter()
    read = await catch_up(pool)
    seconds = time.perf_counter() - started
    say("P4: raw read of the same backlog (baseline) ...")
    return read, seconds, await raw_read_rate(pool, start, read)


async def p4_busy_guild(
    services: Services, guild_id: int, events: int, members: int, say: Say
) -> Result:
    """P4 on a busy guild's backlog: message XP from `members` chatting members (through the
    real batched write path), each member's messages spread over about a week."""
    pool = services.pool
    say("P4: projecting what the earlier workloads wrote (untimed) ...")
    await catch_up(pool)
    start = await slowest_checkpoint(pool)
    say(f"P4: a busy guild's backlog: {events:,} events from {members:,} members ...")
    appended, n = 0, 0
    while appended < events:
        chunk = [
            cmd.GrantMessageXp(
                guild_id=guild_id,
                command_id=f"p4-{n + k}",
                member_id=1 + (n + k) % members,
                channel_id=5,
                message_id=10**12 + n + k,
                at=T0 + BUSY_SPACING * ((n + k) // members),
                entropy=n + k,
                source="bench",
            )
            for k in range(2_000)
        ]
        n += len(chunk)
        for result in await services.ingestor.ingest(chunk):
            if isinstance(result, Outcome):
                appended += len(result.events)
    read, seconds, raw = await _timed_catch_up(services, start, say)
    say("P4: checking the busy guild ...")
    checks = {
        "state rows": await cross_check(pool, guild_id),
        "write side": await write_side(pool, guild_id),
    }
    return _p4_result(
        f"{read:,}-event backlog of a busy guild ({members:,} members)",
        read,
        seconds,
        raw,
        f"about {read // members} per member over a week: message XP and level changes",
        checks,
    )


async def p4_catch_up(services: Services, guild: SyntheticGuild, events: int, say: Say) -> Result:
    """P4 on a sparse backlog: about `events` events of the synthetic guild's new members
    (about ten each, of every kind), so every batch meets thousands of new members."""
    pool = services.pool
    say("P4: projecting what the earlier workloads wrote (untimed) ...")
    await catch_up(pool)
    start = await slowest_checkpoint(pool)
    members = guild.templates.members_for(guild.members, events)
    say(f"P4: generating a backlog of {events:,} events ({members:,} members) ...")
    await guild.grow(pool, guild.members + members, say=say)
    read, seconds, raw = await _timed_catch_up(services, start, say)
    say("P4: verify ...")
    checks = {
        "verify": await projection_invariants(pool),
        "state rows": await cross_check(pool, guild.guild_id),
        "write side": await write_side(pool, guild.guild_id),
    }
    return _p4_result(
        f"{read:,}-event sparse backlog ({members:,} new members)",
        read,
        seconds,
        raw,
        "about ten events of every kind per member",
        checks,
    )


def _p4_result(
    backlog: str, read: int, seconds: float, raw: float, shape: str, checks: dict[str, str]
) -> Result:
    rate = read / seconds
    return Result(
        "P4",
        f"projector catch-up, {backlog}",
        rate,
        "events/s",
        "≥ 150,000 events/s",
        raw,
        "raw delivery-order read rows/s",
        rate / raw,
        rate >= 150_000,
        notes=f"{seconds:.1f} s for {read:,} events ({shape}; every projector)",
        invariants=joined(checks),
    )


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource  # POSIX only, unlike /proc

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_rebuild_process(url: str, say: Say) -> tuple[RebuildReport, int]:
    """`gateway.bench.rebuild_worker` as a child process: its report, and the peak RSS of the
    rebuild in bytes (its own plus its worker processes', summed)."""
    with subprocess.Popen(
        [sys.executable, "-m", "gateway.bench.rebuild_worker"],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        last = ""
        for line in child.stdout:
            last = line
            if line.startswith('{"done"'):
                step = msgspec.json.decode(line)
                say(f"   rebuild: {step['done']:,} / {step['total']:,} events")
    if child.returncode != 0:
        raise RuntimeError(f"the rebuild process failed (exit {child.returncode})")
    finished = msgspec.json.decode(last, type=Finished)
    return finished.report, finished.peak_rss_bytes + finished.report.workers_peak_rss_bytes


async def p5_rebuild(
    services: Services,
    url: str,
    guild: SyntheticGuild,
    log_events: int,
    members: int,
    say: Say,
) -> Result:
    """P5: grow the log to `log_events` (and the guild to `members`), then time a rebuild
    process (run as the schema owner at `url`) and take its peak RSS."""
    pool = services.pool
    missing = log_events - await log_size(pool)
    more = guild.templates.members_for(guild.members, missing) if missing > 0 else 0
    target = max(members, guild.members + more)
    if target > guild.members:
        say(f"P5: generating the log: the guild grows to {target:,} members ...")
        await guild.grow(pool, target, say=say)
    total = await log_size(pool)
    say(f"P5: rebuilding every projection from {total:,} events, in a process of its own ...")
    report, peak = await asyncio.to_thread(run_rebuild_process, url, say)
    rate = report.events_per_second
    peak_mb = peak / 2**20
    say("P5: raw read of the log (baseline) ...")
    raw = await raw_read_rate(pool, Checkpoint(), min(report.events, RAW_READ_SAMPLE))
    say("P5: verify ...")
    checks = {
        "verify": await projection_invariants(pool),
        "state rows": await cross_check(pool, guild.guild_id),
    }
    return Result(
        "P5",
        f"full rebuild of every projection, {report.events:,}-event log",
        rate,
        "events/s",
        "≥ 500,000 events/s, peak RSS < 300 MB",
        raw,
        "raw delivery-order read rows/s",
        rate / raw,
        rate >= 500_000 and peak_mb < 300,
        notes=(
            f"{report.seconds:.1f} s in {report.jobs} process{'es' if report.jobs > 1 else ''}; "
            f"peak RSS of the rebuild {peak_mb:,.0f} MB (its processes' peaks summed); "
            f"{guild.members:,} members in the big guild"
        ),
        invariants=joined(checks),
    )


async def _timed(
    samples: list[int], call: Callable[[int], Awaitable[object]], warm_up: int = 50
) -> Measured:
    for member in samples[:warm_up]:
        await call(member)
    latencies = []
    for member in samples:
        started = time.perf_counter()
        await call(member)
        latencies.append(time.perf_counter() - started)
    return Measured(len(latencies), sum(latencies), latencies)


async def p6_queries(
    services: Services, guild: SyntheticGuild, members: int, samples: int, say: Say
) -> list[Result]:
    """P6: p50/p99 of balance, profile, top-10 and rank in a guild of `members` members."""
    pool = services.pool
    if guild.members < members:
        say(f"P6: generating a guild of {members:,} members ...")
        await guild.grow(pool, members, say=say)
    say("P6: projecting (untimed) ...")
    await catch_up(pool)
    rng = random.Random(6)
    picks = [guild.member_id(rng.randrange(guild.members)) for _ in range(samples)]
    g = guild.guild_id

    async def raw(member: int) -> Any:
        async with pool.connection() as conn:
            cur = await conn.execute(RAW_LOOKUP, (g, member))
            return await cur.fetchone()

    floor = await _timed(picks, raw)
    floor_p99 = floor.percentile(0.99) or 1e-9
    queries: list[tuple[str, Callable[[int], Awaitable[object]], float]] = [
        ("balance", lambda m: balance(pool, g, m), 2.0),
        ("profile", lambda m: profile(pool, g, m), 2.0),
        ("top-10 leaderboard", lambda _m: leaderboard(pool, g, "xp", "all", limit=10), 2.0),
        ("a member's rank", lambda m: rank(pool, g, m, "xp", "all"), 5.0),
    ]
    say(f"P6: {samples:,} calls of each query on {guild.members:,} members ...")
    invariants = await _check_answers(pool, guild, picks[:20])
    results = []
    for name, call, target in queries:
        measured = await _timed(picks, call)
        p99 = measured.percentile(0.99) or 0.0
        results.append(
            Result(
                "P6",
                f"{name}, {guild.members:,}-member guild",
                p99,
                "ms p99",
                f"p99 < {target:g} ms",
                floor_p99,
                "raw PK lookup ms p99",
                p99 / floor_p99,
                p99 < target,
                measured.percentile(0.5),
                p99,
                f"{samples:,} calls, one client, pooled connection",
                invariants,
            )
        )
    return results


async def _check_answers(
    pool: AsyncConnectionPool, guild: SyntheticGuild, members: list[int]
) -> str:
    """The queries' answers agree with the write side's state rows and a plain count."""
    problems = []
    g = guild.guild_id
    top = await leaderboard(pool, g, "xp", "all", limit=10)
    scores = [e.score for e in top.entries]
    if scores != sorted(scores, reverse=True) or not top.entries or top.entries[0].rank != 1:
        problems.append("top-10 is not in rank order")
    async with pool.connection() as conn:
        for member in members:
            cur = await conn.execute(STATE_FIGURES, (g, member))
            state = await cur.fetchone()
            wallet, figures, place = (
                await balance(pool, g, member),
                await profile(pool, g, member),
                await rank(pool, g, member),
            )
            if state is None or wallet is None or figures is None or place is None:
                problems.append(f"member {member}: missing")
                continue
            cur = await conn.execute(
                SCORES_ABOVE, (g, BOARD_CODES["xp"], ALL_TIME_CODE, place.score)
            )
            above = await cur.fetchone()
            if (wallet.balance, figures.xp) != tuple(state):
                problems.append(f"member {member}: balance/xp differ from the state row")
            if above is None or place.rank != above[0] + 1 or figures.rank != place.rank:
                problems.append(f"member {member}: rank differs from a plain count")
    return "ok" if not problems else "; ".join(problems[:3])
