"""The rebuild process of P5: `projections.rebuild` on `DATABASE_URL` (the schema owner).

Run as its own process, as `ledger rebuild` is, so that its peak RSS is the rebuild's alone.
Prints JSON lines: `{"done": n, "total": m}` every few seconds, then `Finished`: the
`RebuildReport` and this process's own peak RSS (its worker processes report theirs in it).
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from ledger.database import make_pool
from projections import RebuildReport, rebuild
from projections.bulk_worker import peak_rss_bytes

PROGRESS_EVERY = 10.0  # seconds


class Finished(msgspec.Struct, frozen=True):
    """The rebuild's report and the peak RSS of this process (not its workers)."""

    report: RebuildReport
    peak_rss_bytes: int


async def work(url: str) -> None:
    """Rebuild every projection, narrating progress on stdout."""
    last = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            print(msgspec.json.encode({"done": done, "total": total}).decode(), flush=True)

    async with make_pool(url, min_size=2, max_size=4) as pool:
        report = await rebuild(pool, progress=progress)
    print(msgspec.json.encode(Finished(report, peak_rss_bytes())).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(work(os.environ["DATABASE_URL"]))
