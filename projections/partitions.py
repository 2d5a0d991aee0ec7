"""A member-ordered bulk fold split over processes.

Members are independent in a bulk fold (`projections.bulk`), so member order is cut into
ranges holding about as many events each: this process folds the first, and a worker process
(`projections.bulk_worker`) each of the others, all into the same shadow tables. Python's fold
is the rebuild's bottleneck, one core's worth per process; PostgreSQL streams the log several
times faster than one process folds it.

The ranges share `max_rows` (memory stays within the single-process bound plus one interpreter
per worker). A worker's failure fails the rebuild, and a rebuild that stops kills its workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.store import Checkpoint
from projections.bulk import SHADOW_SCHEMA, Shadow, fold_range, shadow_oids
from projections.bulk_worker import Done, Failed, Job, Message, Progress
from projections.log import FIRST_MEMBER, LAST_MEMBER, MemberKey, horizon, last_before
from projections.tables import TableIO

log = logging.getLogger(__name__)

MAX_JOBS = 8
EVENTS_PER_JOB = 1_000_000  # below this a worker's start-up is not worth it

# The first stream of each range: streams in key order, each weighed by its version (its count
# of events), cut where the running count crosses a multiple of total/jobs.
SPLIT_STREAMS = """
SELECT min(ARRAY[guild_id, stream])
  FROM (SELECT guild_id, stream,
               div((sum(version) OVER (ORDER BY guild_id, stream) - version) * %(jobs)s,
                   greatest(sum(version) OVER (), 1)) AS part
          FROM streams) s
 WHERE part > 0
 GROUP BY part
 ORDER BY part
"""

ANALYZE_LOG = "ANALYZE events, streams"

_decode = msgspec.json.Decoder(Message).decode


class WorkerFailed(RuntimeError):
    """A rebuild worker process failed or died."""


def default_jobs(events: int) -> int:
    """Processes for a bulk fold of `events`: one per core, one per million events, at most 8."""
    return max(1, min(os.cpu_count() or 1, MAX_JOBS, events // EVENTS_PER_JOB))


async def split(conn: psycopg.AsyncConnection[Any], jobs: int) -> list[tuple[MemberKey, MemberKey]]:
    """Cut member order into at most `jobs` ranges `[first, stop)` of about equal events."""
    if jobs <= 1:
        return [(FIRST_MEMBER, LAST_MEMBER)]
    cur = await conn.execute(SPLIT_STREAMS, {"jobs": jobs})
    cuts = [(int(row[0][0]), int(row[0][1])) for row in await cur.fetchall()]
    bounds = [FIRST_MEMBER, *cuts, LAST_MEMBER]
    return list(itertools.pairwise(bounds))


class Worker:
    """A worker process folding one range."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.process: asyncio.subprocess.Process | None = None

    async def run(self, progress: Callable[[int], None]) -> Done:
        """Start the process, relay its progress, return its result (WorkerFailed if none)."""
        self.process = process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from projections.bulk_worker import main; main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        # The job, with the connection string, goes through a pipe: never on a command line.
        process.stdin.write(msgspec.json.encode(self.job))
        await process.stdin.drain()
        process.stdin.close()
        outcome: Done | Failed | None = None
        async for line in process.stdout:
            try:
                message = _decode(line)
            except msgspec.DecodeError:
                log.warning("rebuild worker said: %s", line.decode(errors="replace").rstrip())
                continue
            if isinstance(message, Progress):
                progress(message.done)
            else:
                outcome = message
        code = await process.wait()
        if isinstance(outcome, Done) and code == 0:
            return outcome
        reason = outcome.error if isinstance(outcome, Failed) else f"exit status {code}"
        raise WorkerFailed(f"the rebuild worker for streams {self.job.members} failed: {reason}")

    async def kill(self) -> None:
        """Stop the process if it still runs."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def fold_by_member(
    pool: AsyncConnectionPool,
    conn: psycopg.AsyncConnection[Any],
    reader: psycopg.AsyncConnection[Any],
    shadows: Sequence[Shadow],
    chunk_size: int,
    max_rows: int,
    progress: Callable[[int], None],
    jobs: int = 1,
) -> tuple[int, Checkpoint, list[Done]]:
    """Fold every event below the current horizon into the shadows, in up to `jobs` processes.

    Returns the events read, the point reached (the last event below the horizon in delivery
    order: exactly the events up to it were folded, so the rebuild continues from there in
    delivery order) and the workers' reports. The derived tables are filled at the end.
    """
    # A log that has just grown a lot (an import, a restored dump, the benchmark's generator)
    # has no statistics for its new rows until autovacuum gets to it, and member-order chunks
    # then plan badly: 1.6-2 s per 25k events instead of 0.09 s, measured on a fresh 2M-event
    # log. Sampling the log costs about a second; a stale plan cost the first minute of P5.
    await conn.execute(ANALYZE_LOG)
    point = await horizon(conn)
    end = await last_before(conn, point) or Checkpoint()
    ranges = await split(conn, jobs)
    # Each process holds a share of the memory one would: a chunk and its rows waiting.
    chunk_size = max(1, chunk_size // len(ranges))
    share = max(1, max_rows // len(ranges))
    done = [0] * len(ranges)

    def report(i: int) -> Callable[[int], None]:
        def update(n: int) -> None:
            done[i] = n
            progress(sum(done))

        return update

    names = [s.projector.name for s in shadows]
    conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
    if len(ranges) > 1 and not conninfo:
        raise TypeError("a rebuild in several processes needs a pool made from a connection string")
    owned = await shadow_oids(conn) if len(ranges) > 1 else {}
    workers = [
        Worker(Job(conninfo=conninfo, projectors=names, horizon=point, members=members,
                   chunk_size=chunk_size, max_rows=share, shadows=owned))
        for members in ranges[1:]
    ]  # fmt: skip

    async def here() -> int:
        async with pool.connection() as writer:
            return await fold_range(
                reader, writer, shadows, point, ranges[0], chunk_size, share, report(0)
            )

    try:
        # A failure anywhere cancels the rest: this range stops at its next await, and the
        # workers are killed below.
        async with asyncio.TaskGroup() as group:
            mine = group.create_task(here())
            theirs = [group.create_task(w.run(report(i))) for i, w in enumerate(workers, 1)]
    except BaseExceptionGroup as errors:
        # A worker's own error says more than the cancellations it caused.
        first = next(
            (e for e in errors.exceptions if isinstance(e, WorkerFailed)), errors.exceptions[0]
        )
        raise first from None
    finally:
        for worker in workers:
            await worker.kill()
    reports = [task.result() for task in theirs]
    for shadow in shadows:
        shadow.applied += sum(r.applied.get(shadow.projector.name, 0) for r in reports)
    started = time.monotonic()
    for shadow in shadows:
        await shadow.projector.derive(TableIO(conn, SHADOW_SCHEMA))
    log.info("rebuild: derived tables filled in %.1f s", time.monotonic() - started)
    return mine.result() + sum(r.events for r in reports), end, reports
