"""The write-side workloads of `ledger bench` (P1, P2, P3, P8), each a small async function."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import LedgerError
from ledger.levels import level_for_xp
from ledger.member import MemberState, encode_state
from ledger.runtime import Services
from ledger.service import Outcome

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Measured:
    """Throughput and latency of one workload run."""

    count: int
    seconds: float
    latencies: list[float]
    refused: int = 0

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(
    clients: int, seconds: float, operation: Callable[[int, int], Awaitable[object]]
) -> Measured:
    """`clients` concurrent loops calling `operation(client, n)` for `seconds`."""
    latencies: list[float] = []
    refused = 0
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal refused
        n = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await operation(index, n)
            except LedgerError:
                refused += 1
            latencies.append(time.perf_counter() - started)
            n += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return Measured(len(latencies) - refused, time.monotonic() - started, latencies, refused)


def random_transfer(
    rng: random.Random, guild_id: int, members: int, command_id: str
) -> cmd.Transfer:
    """1 LC between two different members drawn from 1..`members` (P1, P3, P7)."""
    a, b = rng.sample(range(1, members + 1), 2)
    return cmd.Transfer(
        guild_id=guild_id, command_id=command_id, from_id=a, to_id=b, amount=1, at=T0,
        source="bench",
    )  # fmt: skip


async def transfers(
    services: Services, guild_id: int, members: int, clients: int, seconds: float, batched: bool
) -> Measured:
    """P1/P3: random 1-LC transfers among `members` members (each starts with 25 LC)."""
    rng = random.Random(guild_id)
    execute = services.batcher.execute if batched else services.ledger.execute

    async def transfer(client: int, n: int) -> Outcome:
        return await execute(random_transfer(rng, guild_id, members, f"t{client}-{n}"))

    return await closed_loop(clients, seconds, transfer)


async def message_xp(
    services: Services, guild_id: int, commands: int, members: int, in_flight: int = 1000
) -> Measured:
    """P2: message-XP commands through the batched path; counts events appended.

    `in_flight` submitters each await one command at a time, as gateway event handlers do.
    """
    appended = 0
    latencies: list[float] = []
    numbers = iter(range(commands))

    async def submitter() -> None:
        nonlocal appended
        for n in numbers:
            started = time.perf_counter()
            result = await services.batcher.submit(
                cmd.GrantMessageXp(
                    guild_id=guild_id,
                    command_id=f"m{n}",
                    member_id=1 + n % members,
                    channel_id=5,
                    message_id=10**12 + n,
                    at=T0 + timedelta(seconds=61 * (n // members)),
                    entropy=n,
                    source="bench",
                )
            )
            latencies.append(time.perf_counter() - started)
            if isinstance(result, Outcome):
                appended += len(result.events)

    started = time.monotonic()
    await asyncio.gather(*(submitter() for _ in range(in_flight)))
    return Measured(appended, time.monotonic() - started, latencies)


HISTORY = """
INSERT INTO events (guild_id, stream, version, type, schema_version, data, meta)
SELECT %s, %s, g, 'xp_granted', 1, %s::jsonb, '{"command_id": "bench-history"}'
  FROM generate_series(2, %s) AS g
"""
HISTORY_START = """
INSERT INTO events (guild_id, stream, version, type, schema_version, data, meta)
VALUES (%s, %s, 1, 'member_joined', 1, %s::jsonb, '{"command_id": "bench-history"}')
"""
HISTORY_STATE = """
INSERT INTO streams (guild_id, stream, version, state) VALUES (%s, %s, %s, %s::jsonb)
"""


async def seed_history(services: Services, guild_id: int, member: int, events: int) -> None:
    """Give `member` a history of `events` events (a join, then 1-XP admin grants)."""
    joined = ev.MemberJoined(member_id=member, at=T0, starting_balance=25)
    grant = ev.XpGranted(member_id=member, at=T0, source="admin", base=1, multiplier_pct=100, xp=1)
    xp = events - 1
    state = MemberState(joined=True, balance=25, xp=xp, level=level_for_xp(xp))
    async with services.pool.connection() as conn, conn.transaction():
        await conn.execute(HISTORY_START, (guild_id, member, ev.encode(joined).decode()))
        await conn.execute(HISTORY, (guild_id, member, ev.encode(grant).decode(), events))
        await conn.execute(HISTORY_STATE, (guild_id, member, events, encode_state(state).decode()))


async def old_versus_new(
    services: Services, guild_id: int, old_member: int, samples: int
) -> tuple[Measured, Measured]:
    """P8: the same command for the member with a long history and for new members."""
    old: list[float] = []
    new: list[float] = []
    for n in range(samples):
        for member, into in ((old_member, old), (10**9 + n, new)):
            command = cmd.GrantItem(
                guild_id=guild_id,
                command_id=f"p8-{member}-{n}",
                member_id=member,
                item="jackpot",
                item_source="game",
                at=T0,
                source="bench",
            )
            started = time.perf_counter()
            await services.ledger.execute(command)
            into.append(time.perf_counter() - started)
    return Measured(samples, sum(old), old), Measured(samples, sum(new), new)
