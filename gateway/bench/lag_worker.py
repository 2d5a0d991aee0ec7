"""The projection worker process of P7: `run_workers` on `DATABASE_URL` until SIGTERM/SIGINT.

What `ledger project` runs, minus the chain sealer (which would spend the benchmark sealing the
synthetic log) and the migrations (the benchmark has applied them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from ledger.database import make_pool
from projections import run_workers


async def work(url: str) -> None:
    """Run one projection worker until a signal arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with make_pool(url, min_size=2, max_size=4) as pool:
        await run_workers(pool, stop=stop)


if __name__ == "__main__":
    asyncio.run(work(os.environ["DATABASE_URL"]))
