"""A worker process killed with SIGKILL mid-batch loses nothing and applies nothing twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from projections import run_workers, status, verify
from projections import worker as worker_module
from tests.fix_db import LedgerEnv
from tests.fix_projections import assert_tables_equal_fold, project, simulate

ROOT = Path(__file__).resolve().parent.parent

# A worker process. With a kill point it SIGKILLs itself the KILL_AT-th time it gets there:
# right after writing a batch's table changes (inside its transaction, before the commit), or
# just before / just after moving a checkpoint. It writes every three batches of its backlog,
# so it is also killed with batches folded and held back.
WORKER = r"""
import asyncio, os, signal, sys
from ledger.database import make_pool
from projections import checkpoints, projector, run_workers

url, point, kill_at, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
calls = 0

def count_and_maybe_die():
    global calls
    calls += 1
    if calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

original_flush = projector.Overlay.flush
original_advance = checkpoints.advance

async def flush(self, io):
    written = await original_flush(self, io)
    count_and_maybe_die()
    return written

async def advance(*args):
    if point == "before_advance":
        count_and_maybe_die()
    await original_advance(*args)
    if point == "after_advance":
        count_and_maybe_die()

if point == "flush":
    projector.Overlay.flush = flush
elif point != "none":
    checkpoints.advance = advance

async def main():
    async with make_pool(url, min_size=2, max_size=4) as pool:
        await run_workers(pool, batch_size=batch_size, poll_interval=0.05,
                          max_held_events=3 * batch_size)

asyncio.run(main())
"""


def _start_worker(url: str, point: str, kill_at: int, batch_size: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, point, str(kill_at), str(batch_size)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )


def _positions(env: LedgerEnv) -> list[int]:
    return [p for (p,) in env.sql("SELECT position FROM projector_checkpoints")]


@pytest.mark.parametrize("point", ["flush", "before_advance", "after_advance"])
def test_sigkill_mid_batch(env: LedgerEnv, point: str) -> None:
    simulate(env, seed=41, count=250)
    end = env.sql("SELECT max(position) FROM events")[0][0]
    proc = _start_worker(env.url, point, kill_at=9, batch_size=20)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    # Some batches were committed, the killed one left no trace: every table equals the fold of
    # the log up to its own checkpoint.
    positions = _positions(env)
    assert any(0 < p < end for p in positions)
    report = env.run(verify(env.store.pool))
    assert report.ok, [d for t in report.tables for d in t.differences]
    project(env)  # the restart
    assert_tables_equal_fold(env)


def test_sigkill_from_outside_and_takeover(env: LedgerEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "CLAIM_INTERVAL", 0.05)
    simulate(env, seed=42, count=300)
    pool = env.store.pool
    proc = _start_worker(env.url, "none", kill_at=0, batch_size=3)

    async def scenario() -> None:
        first = None
        for _ in range(3000):  # the process claims every lease and starts working
            states = await status(pool)
            if all(s.leased for s in states) and any(s.checkpoint[1] for s in states):
                first = {s.lease_pid for s in states}
                break
            await asyncio.sleep(0.01)
        assert first is not None and len(first) == 1
        stop = asyncio.Event()
        standby = asyncio.create_task(run_workers(pool, stop=stop, poll_interval=0.05))
        try:
            proc.kill()  # SIGKILL, wherever it is in its batch
            await asyncio.to_thread(proc.wait, 30)
            for _ in range(3000):  # PostgreSQL drops the dead session's leases; standby claims
                states = await status(pool)
                if all(s.leased and s.lease_pid not in first for s in states) and all(
                    s.lag_events == 0 for s in states
                ):
                    break
                await asyncio.sleep(0.01)
            states = await status(pool)
            assert all(s.lease_pid not in first for s in states)
            assert all(s.lag_events == 0 for s in states)
        finally:
            stop.set()
            await standby

    try:
        env.run(scenario())
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    assert_tables_equal_fold(env)
