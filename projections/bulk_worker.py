"""A worker process of a parallel rebuild: folds one range of member streams into the shadows.

Started by `projections.partitions` as a Python process running `main`. It reads its `Job`
as JSON on stdin and answers on stdout with JSON lines: `Progress` after each chunk, then `Done`
or `Failed`. It stops at its next chunk when its parent goes away, and every write first checks
that the shadow tables are still its rebuild's (`projections.bulk`), so an orphan never writes
into the next rebuild's shadows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
from typing import Any

import msgspec
import psycopg

from ledger.database import SESSION_OPTIONS
from projections.bulk import SHADOW_SCHEMA, Shadow, fold_range
from projections.projectors import select
from projections.tables import TableIO

log = logging.getLogger(__name__)


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """One range of a member-ordered bulk fold."""

    conninfo: str
    projectors: list[str]
    horizon: str  # fold the events with tx below this
    members: tuple[tuple[int, int], tuple[int, int]]  # streams [first, stop)
    chunk_size: int
    max_rows: int
    shadows: dict[str, int]  # the rebuild's shadow tables: name -> oid


class Progress(msgspec.Struct, frozen=True, tag="progress"):
    """Events read so far."""

    done: int


class Done(msgspec.Struct, frozen=True, kw_only=True, tag="done"):
    """The range is folded and written."""

    events: int
    applied: dict[str, int]
    peak_rss_bytes: int


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """The range could not be folded."""

    error: str


Message = Progress | Done | Failed
_encode = msgspec.json.Encoder().encode


class Orphaned(RuntimeError):
    """The rebuild that started this worker is gone."""


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Read from /proc (VmHWM): `getrusage` would count the parent's peak too, since the kernel
    carries a forked address space's high-water mark over `exec`.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere: an upper bound


def _say(message: Message) -> None:
    try:
        sys.stdout.buffer.write(_encode(message) + b"\n")
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the rebuild is gone: stop at the next chunk (see `fold`)
        pass


async def _connect(conninfo: str) -> psycopg.AsyncConnection[Any]:
    # As the rebuild's pool would (`make_pool`): autocommit, the ledger's session limits.
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True, options=SESSION_OPTIONS)


async def fold(job: Job) -> Done:
    """Fold the job's range into the shadow tables, reporting progress on stdout."""
    parent = os.getppid()

    def progress(done: int) -> None:
        if os.getppid() != parent:
            raise Orphaned("the rebuild that started this worker has stopped")
        _say(Progress(done))

    projectors = select(job.projectors)
    async with (
        await _connect(job.conninfo) as reader,
        await _connect(job.conninfo) as writer,
    ):
        shadows = [Shadow(p, TableIO(writer, SHADOW_SCHEMA)) for p in projectors]
        events = await fold_range(
            reader, writer, shadows, job.horizon, job.members, job.chunk_size, job.max_rows,
            progress, job.shadows,
        )  # fmt: skip
    return Done(
        events=events,
        applied={s.projector.name: s.applied for s in shadows},
        peak_rss_bytes=peak_rss_bytes(),
    )


def main() -> None:
    """Read the job from stdin, fold it, say how it went; exit 1 on failure."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    try:
        done = asyncio.run(fold(job))
    except Exception as error:  # reported to the parent, which fails the rebuild
        log.exception("rebuild worker for streams %s failed", job.members)
        _say(Failed(f"{type(error).__name__}: {error}"))
        sys.exit(1)
    _say(done)
