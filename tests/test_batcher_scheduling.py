"""The batcher's scheduling, against an ingestor that holds each batch until the test lets it go:
batches overlap in flight but never share a member, each member's commands (and each guild's
config changes) keep their submission order, and everything waiting is answered."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from ledger import commands as cmd
from ledger.ingest import BatchIngestor, CommandBatcher, Result
from ledger.service import Outcome

G, G2 = 1001, 1002
T0 = datetime(2026, 5, 1, tzinfo=UTC)
ADMIN = cmd.Actor(1, is_moderator=True, is_admin=True)
DEADLINE = 10.0  # a hang is a failure, not a timing assertion


class HeldIngestor:
    """Records each batch as it starts and finishes it only when `release` is called."""

    def __init__(self) -> None:
        self.batches: list[list[cmd.AnyCommand]] = []
        self.gates: list[asyncio.Event] = []
        self.in_flight: dict[int, set[tuple[int, int]]] = {}
        self.most_in_flight = 0
        self.overlaps: list[tuple[int, int]] = []
        self.started = asyncio.Condition()

    async def ingest(self, commands: Sequence[cmd.AnyCommand]) -> list[Result]:
        index = len(self.batches)
        claims = {(c.guild_id, m) for c in commands for m in c.members()}
        claims |= {(c.guild_id, -1) for c in commands if isinstance(c, cmd.ChangeConfig)}
        for other, theirs in self.in_flight.items():
            if (
                claims & theirs
                or _whole(claims) & _guilds(theirs)
                or _whole(theirs) & _guilds(claims)
            ):
                self.overlaps.append((other, index))
        self.in_flight[index] = claims
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        self.batches.append(list(commands))
        gate = asyncio.Event()
        self.gates.append(gate)
        async with self.started:
            self.started.notify_all()
        await gate.wait()
        del self.in_flight[index]
        return [Outcome(command_id=c.command_id) for c in commands]

    async def wait_started(self, count: int) -> None:
        async with self.started:
            await asyncio.wait_for(
                self.started.wait_for(lambda: len(self.batches) >= count), DEADLINE
            )

    def release(self, index: int) -> None:
        self.gates[index].set()


def _guilds(claims: set[tuple[int, int]]) -> set[int]:
    return {g for g, _ in claims}


def _whole(claims: set[tuple[int, int]]) -> set[int]:
    return {g for g, m in claims if m == -1}


def grant(n: int, member: int, guild: int = G) -> cmd.GrantItem:
    return cmd.GrantItem(
        guild_id=guild, command_id=f"c{n}", member_id=member, item="jackpot", at=T0
    )


def transfer(n: int, a: int, b: int, guild: int = G) -> cmd.Transfer:
    return cmd.Transfer(guild_id=guild, command_id=f"c{n}", from_id=a, to_id=b, amount=1, at=T0)


def config(n: int, guild: int = G) -> cmd.ChangeConfig:
    return cmd.ChangeConfig(
        guild_id=guild, command_id=f"c{n}", actor=ADMIN, key="starting_balance", value=n
    )


def ids(batch: list[cmd.AnyCommand]) -> list[str]:
    return [c.command_id for c in batch]


def start(concurrency: int = 2, max_batch: int = 500) -> tuple[HeldIngestor, CommandBatcher]:
    ingestor = HeldIngestor()
    batcher = CommandBatcher(
        cast(BatchIngestor, ingestor), max_batch=max_batch, concurrency=concurrency
    )
    return ingestor, batcher


def test_a_second_batch_is_decided_while_the_first_commits() -> None:
    async def scenario() -> HeldIngestor:
        ingestor, batcher = start()
        runner = asyncio.create_task(batcher.run())
        first = asyncio.create_task(batcher.submit(grant(1, member=1)))
        await ingestor.wait_started(1)
        second = asyncio.create_task(batcher.submit(grant(2, member=2)))
        await ingestor.wait_started(2)  # would time out with one batch at a time
        ingestor.release(1)
        assert isinstance(await second, Outcome) and not first.done()
        ingestor.release(0)
        await first
        runner.cancel()
        return ingestor

    ingestor = asyncio.run(scenario())
    assert ingestor.most_in_flight == 2 and not ingestor.overlaps


def test_a_command_waits_for_the_batch_holding_its_member_and_keeps_its_order() -> None:
    async def scenario() -> HeldIngestor:
        ingestor, batcher = start()
        runner = asyncio.create_task(batcher.run())
        waiting = [asyncio.create_task(batcher.submit(grant(0, member=1)))]
        await ingestor.wait_started(1)
        # c1 meets member 1 in flight; c2 (members 1 and 3) must stay behind c1; c3 (member 3)
        # behind c2; c4 (member 2) is free to go now.
        for command in (grant(1, 1), transfer(2, 1, 3), grant(3, 3), grant(4, 2)):
            waiting.append(asyncio.create_task(batcher.submit(command)))
        await ingestor.wait_started(2)
        assert ids(ingestor.batches[1]) == ["c4"]
        ingestor.release(1)
        ingestor.release(0)
        await ingestor.wait_started(3)
        assert ids(ingestor.batches[2]) == ["c1", "c2", "c3"]
        ingestor.release(2)
        await asyncio.gather(*waiting)
        runner.cancel()
        return ingestor

    ingestor = asyncio.run(scenario())
    assert not ingestor.overlaps


def test_a_config_change_waits_for_its_guild_and_the_guild_waits_for_it() -> None:
    async def scenario() -> HeldIngestor:
        ingestor, batcher = start()
        runner = asyncio.create_task(batcher.run())
        waiting = [asyncio.create_task(batcher.submit(grant(0, member=1)))]
        await ingestor.wait_started(1)
        for command in (config(1), grant(2, member=5), grant(3, member=1, guild=G2)):
            waiting.append(asyncio.create_task(batcher.submit(command)))
        await ingestor.wait_started(2)
        assert ids(ingestor.batches[1]) == ["c3"]  # another guild is not held up
        ingestor.release(0)
        await ingestor.wait_started(3)
        assert ids(ingestor.batches[2]) == ["c1", "c2"]  # the config change first
        ingestor.release(1)
        ingestor.release(2)
        await asyncio.gather(*waiting)
        runner.cancel()
        return ingestor

    ingestor = asyncio.run(scenario())
    assert not ingestor.overlaps


def test_cancelling_drains_the_held_commands() -> None:
    async def scenario() -> list[Result]:
        ingestor, batcher = start()
        runner = asyncio.create_task(batcher.run())
        first = asyncio.create_task(batcher.submit(grant(0, member=1)))
        await ingestor.wait_started(1)
        held = asyncio.create_task(batcher.submit(grant(1, member=1)))
        runner.cancel()  # waits for the batch in flight, then flushes what is waiting
        ingestor.release(0)
        await ingestor.wait_started(2)
        ingestor.release(1)
        return await asyncio.gather(first, held)

    results = asyncio.run(scenario())
    assert [r.command_id for r in results if isinstance(r, Outcome)] == ["c0", "c1"]


Spec = tuple[str, int, int, int]

specs = st.lists(
    st.tuples(
        st.sampled_from(["grant", "transfer", "config"]),
        st.integers(1, 5),
        st.integers(1, 5),
        st.sampled_from([G, G2]),
    ),
    min_size=1,
    max_size=40,
)


def build(n: int, spec: Spec) -> cmd.AnyCommand:
    kind, a, b, guild = spec
    if kind == "config":
        return config(n, guild)
    if kind == "transfer" and a != b:
        return transfer(n, a, b, guild)
    return grant(n, a, guild)


@given(specs=specs, seed=st.integers(0, 2**32), concurrency=st.integers(1, 4))
def test_batches_in_flight_never_share_a_member_and_order_holds(
    specs: list[Spec], seed: int, concurrency: int
) -> None:
    commands = [build(n, spec) for n, spec in enumerate(specs)]

    async def scenario() -> tuple[HeldIngestor, list[Any]]:
        rng = random.Random(seed)
        ingestor, batcher = start(concurrency, max_batch=rng.randint(1, 6))
        runner = asyncio.create_task(batcher.run())
        futures: list[asyncio.Task[Result]] = []
        released: set[int] = set()

        async def step() -> None:
            open_ = [i for i in range(len(ingestor.gates)) if i not in released]
            if open_ and rng.random() < 0.6:
                released.add(index := rng.choice(open_))
                ingestor.release(index)
            await asyncio.sleep(0)  # one turn of the loop for the batcher

        for command in commands:
            futures.append(asyncio.create_task(batcher.submit(command)))
            await step()
        async with asyncio.timeout(DEADLINE):
            while not all(f.done() for f in futures):
                await step()
        runner.cancel()
        return ingestor, [f.result() for f in futures]

    ingestor, results = asyncio.run(scenario())
    assert [r.command_id for r in results] == [c.command_id for c in commands]
    assert not ingestor.overlaps
    assert ingestor.most_in_flight <= concurrency
    order = [int(c.command_id[1:]) for batch in ingestor.batches for c in batch]
    assert sorted(order) == list(range(len(commands)))  # each command exactly once
    position = {n: i for i, n in enumerate(order)}
    for n, first in enumerate(commands):
        for m in range(n + 1, len(commands)):
            later = commands[m]
            if first.guild_id != later.guild_id:
                continue
            shared = set(first.members()) & set(later.members())
            exclusive = isinstance(first, cmd.ChangeConfig) or isinstance(later, cmd.ChangeConfig)
            if shared or exclusive:
                assert position[n] < position[m], (first, later)


def test_closed_loop_clients_settle_into_two_even_batches() -> None:
    """16 clients, each submitting again when answered: two lanes of 8, not one of 16, and
    back to 8 and 8 after a command held for a member in flight (the answered clients' new
    commands join it: the lane is freed only after they have been answered)."""

    async def scenario() -> list[int]:
        ingestor, batcher = start(concurrency=2)
        runner = asyncio.create_task(batcher.run())
        numbers = iter(range(10_000))

        async def client(index: int) -> None:
            # client 0's second command meets client 8's member, in the second batch: held
            members = [100, 108, 100, 100, 100, 100] if index == 0 else [100 + index] * 6
            for member in members:
                await batcher.submit(grant(next(numbers), member))

        clients = [asyncio.create_task(client(i)) for i in range(16)]
        for n in range(6):
            await ingestor.wait_started(n + 1)
            ingestor.release(n)
        runner.cancel()
        for task in clients:
            task.cancel()
        return [len(batch) for batch in ingestor.batches[:6]]

    assert asyncio.run(scenario()) == [8, 8, 7, 8, 8, 8]


def batches_of(commands: list[cmd.AnyCommand]) -> list[list[str]]:
    """The batches that commands submitted together, with both lanes free, go out as."""

    async def scenario() -> list[list[str]]:
        ingestor, batcher = start(concurrency=2)
        waiting = [asyncio.create_task(batcher.submit(c)) for c in commands]
        runner = asyncio.create_task(batcher.run())
        await ingestor.wait_started(1)
        for _ in range(5):  # turns of the loop in which a split-off part would start
            await asyncio.sleep(0)
        for index in range(len(ingestor.batches)):
            ingestor.release(index)
        await asyncio.wait_for(asyncio.gather(*waiting), DEADLINE)
        runner.cancel()
        return [ids(batch) for batch in ingestor.batches]

    return asyncio.run(scenario())


def test_a_command_with_members_in_both_halves_keeps_the_batch_whole() -> None:
    """Sixteen commands on distinct members would go as two batches of 8, but the last one
    (members 1 and 15) meets both halves: split, member 15's commands would run out of order.
    Hot accounts (a few members shared by everything) go whole this way too."""
    commands = [grant(n, member=n + 1) for n in range(15)] + [transfer(15, 1, 15)]
    assert batches_of(commands) == [[f"c{n}" for n in range(16)]]
    plain = [grant(n, member=n + 1) for n in range(16)]
    assert batches_of(plain) == [[f"c{n}" for n in range(8)], [f"c{n}" for n in range(8, 16)]]


def test_a_few_commands_are_not_split() -> None:
    """Three commands with both lanes free go as one batch: halves of one or two commands
    would cost two appends' fixed cost for nothing."""
    assert batches_of([grant(n, member=n) for n in range(3)]) == [["c0", "c1", "c2"]]
