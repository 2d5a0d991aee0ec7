"""The rebuild process of P5: `projections.rebuild` on `DATABASE_URL` (the schema owner).

Run as its own process, as `ledger rebuild` is, so that its peak RSS is the rebuild's alone.
Prints JSON lines: `{"done": n, "total": m}` every few seconds, then the `RebuildReport`.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec

from ledger.database import make_pool
from projections import rebuild

PROGRESS_EVERY = 10.0  # seconds


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
    print(msgspec.json.encode(report).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(work(os.environ["DATABASE_URL"]))
