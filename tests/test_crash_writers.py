"""Crashes on the write side: a writer or a rebuild killed with SIGKILL at a random moment
(seeded, printed) loses nothing that was acknowledged and doubles nothing; a commit whose
outcome is unknown is resolved through the command id, never blindly retried."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger import commands as cmd
from ledger.consistency import check_guild
from ledger.errors import DatabaseUnavailable
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.service import Ledger
from ledger.store import AppendBatch, EventStore
from projections import catch_up, rebuild, verify
from tests.fix_db import LedgerEnv

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("LEDGER_TEST_SEED") or random.randrange(2**32))
G = 7070
T0 = datetime(2026, 7, 1, tzinfo=UTC)

# A writer process: transfers and XP through the batcher, printing each acknowledged command.
WRITER = r"""
import asyncio, random, sys
from ledger import commands as cmd
from ledger.runtime import open_services

url, seed = sys.argv[1], int(sys.argv[2])

async def main():
    rng = random.Random(seed)
    async with open_services(url) as services:
        async def one(n):
            if n % 2:
                c = cmd.Transfer(guild_id=7070, command_id=f"w{n}", from_id=rng.randint(1, 20),
                                 to_id=rng.randint(21, 40), amount=1)
            else:
                c = cmd.GrantMessageXp(guild_id=7070, command_id=f"w{n}",
                                       member_id=rng.randint(1, 40), channel_id=5,
                                       message_id=n + 1, entropy=n)
            result = await services.batcher.submit(c)
            if getattr(result, "appended", False):
                print("OK", c.command_id, flush=True)
        n = 0
        while True:
            await asyncio.gather(*(one(n + k) for k in range(16)))
            n += 16

asyncio.run(main())
"""


def _run_and_kill(argv: list[str], lines_before_kill: int) -> list[str]:
    """Start a process, read its stdout until `lines_before_kill` lines, SIGKILL it."""
    lines: list[str] = []
    with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line.strip())
                if len(lines) >= lines_before_kill:
                    break
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    return lines


def test_a_killed_writer_loses_nothing_acknowledged_and_doubles_nothing(env: LedgerEnv) -> None:
    rng = random.Random(SEED)
    print(f"crash seed {SEED}", file=sys.stderr)
    for round_ in range(3):
        kill_after = rng.randint(20, 300)
        acknowledged = _run_and_kill(
            [sys.executable, "-c", WRITER, env.url, str(SEED + round_)], kill_after
        )
        ids = [line.split()[1] for line in acknowledged if line.startswith("OK ")]
        assert len(ids) >= kill_after - 1
        counts = dict(
            env.sql(
                "SELECT command_id, count(*) FROM commands WHERE guild_id = %s "
                "AND command_id = ANY(%s) GROUP BY 1",
                (G, ids),
            )
        )
        assert counts == dict.fromkeys(ids, 1), "an acknowledged command is missing"
        per_command = env.sql(
            "SELECT meta->>'command_id', count(DISTINCT tx) FROM events WHERE guild_id = %s "
            "GROUP BY 1 HAVING count(DISTINCT tx) > 1",
            (G,),
        )
        assert per_command == [], "a command's events were appended twice"
    assert env.run(check_guild(env.store.pool, G)).ok
    env.run(catch_up(env.store.pool))
    assert env.run(verify(env.store.pool)).ok


def test_a_killed_rebuild_leaves_the_live_tables_and_a_rerun_succeeds(env: LedgerEnv) -> None:
    ingestor = BatchIngestor(env.store)
    grants = [
        cmd.GrantMessageXp(
            guild_id=G,
            command_id=f"x{n}",
            member_id=1 + n % 500,
            channel_id=5,
            message_id=n + 1,
            entropy=n,
            at=T0 + timedelta(seconds=61 * (n // 500)),  # past the cooldown: every grant lands
        )
        for n in range(6000)
    ]
    for start in range(0, len(grants), 1000):
        env.run(ingestor.ingest(grants[start : start + 1000]))
    env.run(catch_up(env.store.pool))
    rng = random.Random(SEED)
    script = (
        "import asyncio, sys\n"
        "from ledger.database import make_pool\n"
        "from projections import rebuild\n"
        "async def main():\n"
        "    async with make_pool(sys.argv[1], min_size=3, max_size=4) as pool:\n"
        "        def progress(done, total):\n"
        "            print('P', done, flush=True)\n"
        "        await rebuild(pool, progress=progress, chunk_size=500)\n"
        "        print('DONE', flush=True)\n"
        "asyncio.run(main())\n"
    )
    for _ in range(3):
        kill_after = rng.randint(1, 8)
        lines = _run_and_kill([sys.executable, "-c", script, env.url], kill_after)
        assert "DONE" not in lines, "the rebuild finished before it could be killed"
        assert env.run(verify(env.store.pool)).ok  # live tables intact after each kill
    report = env.run(rebuild(env.store.pool))
    assert report.events == env.sql("SELECT count(*) FROM events")[0][0] > 500
    assert env.run(verify(env.store.pool)).ok


class DropsAfterCommit(EventStore):
    """A store whose connection 'drops' after the append committed (or before it)."""

    def __init__(self, real: EventStore, commit_first: bool) -> None:
        super().__init__(real.pool)
        self.commit_first = commit_first
        self.calls = 0

    async def append(self, batch: AppendBatch) -> list[int]:
        self.calls += 1
        if self.calls == 1:
            if self.commit_first:
                await super().append(batch)
            raise DatabaseUnavailable("connection lost during commit")
        return await super().append(batch)


@pytest.mark.parametrize("commit_first", [True, False])
def test_an_unknown_commit_is_resolved_by_the_command_id(
    env: LedgerEnv, commit_first: bool
) -> None:
    ledger = Ledger(DropsAfterCommit(env.store, commit_first))
    transfer = cmd.Transfer(guild_id=G, command_id="pay-1", from_id=1, to_id=2, amount=5)
    if commit_first:
        outcome = env.run(ledger.execute(transfer))
        assert outcome.replayed and outcome.events[-1] == "transfer_received"
    else:
        with pytest.raises(DatabaseUnavailable) as caught:
            env.run(ledger.execute(transfer))
        assert "nothing was recorded" in caught.value.message
        # the caller's retry with the same id is safe
        assert not env.run(Ledger(env.store).execute(transfer)).replayed
    assert env.sql("SELECT count(*) FROM events WHERE meta->>'command_id' = 'pay-1'") == [(4,)]


def test_a_batched_command_failed_by_an_outage_is_safe_to_retry(env: LedgerEnv) -> None:
    store = DropsAfterCommit(env.store, commit_first=True)
    transfer = cmd.Transfer(guild_id=G, command_id="pay-2", from_id=1, to_id=2, amount=5)

    async def scenario() -> bool:
        batcher = CommandBatcher(BatchIngestor(store))
        import asyncio

        runner = asyncio.create_task(batcher.run())
        try:
            with pytest.raises(DatabaseUnavailable):
                await batcher.execute(transfer)  # committed, but the caller cannot know
            return (await batcher.execute(transfer)).replayed  # its retry
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    assert env.run(scenario())
    assert env.sql("SELECT count(*) FROM events WHERE meta->>'command_id' = 'pay-2'") == [(4,)]
