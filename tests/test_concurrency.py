"""Concurrent clients against the real store: conservation, no overdraft, exactly-once appends,
no deadlocks (DESIGN §3 lock order), and one message-XP grant per cooldown (invariant 6)."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import Conflict, InsufficientFunds, InvalidAmount, LedgerError
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.member import decode_state, fold, lc_delta
from ledger.service import Outcome
from ledger.store import AppendBatch
from tests.fix_db import LedgerEnv

G = 5005
T0 = datetime(2024, 7, 1, 18, 0, tzinfo=UTC)
ADMIN = cmd.Actor(1, is_admin=True)
MEMBERS = list(range(10, 20))
CLIENTS = 16
PER_CLIENT = 20
FUNDING = 200
# Replay a failure with LEDGER_TEST_SEED=<the printed seed>.
SEED = int(os.environ.get("LEDGER_TEST_SEED") or random.randrange(2**32))


Execute = Callable[[cmd.AnyCommand], Awaitable[Outcome]]


@pytest.fixture
def append_errors(env: LedgerEnv) -> Iterator[Counter[str]]:
    """SQLSTATEs behind every Conflict the store raised (40P01 would be a deadlock)."""
    real_append = env.store.append
    seen: Counter[str] = Counter()

    async def recording(batch: AppendBatch) -> list[int]:
        try:
            return await real_append(batch)
        except Conflict as exc:
            seen[str(getattr(exc.__cause__, "sqlstate", None))] += 1
            raise

    env.store.append = recording  # type: ignore[method-assignment]
    yield seen
    env.store.append = real_append  # type: ignore[method-assignment]


def log_events(env: LedgerEnv, guild: int) -> list[tuple[int, int, ev.AnyEvent, str, str]]:
    """(stream, version, event, command id, tx) of a guild, in stream order."""
    rows = env.sql(
        "SELECT stream, version, type, schema_version, data::text, meta->>'command_id', tx::text"
        " FROM events WHERE guild_id = %s ORDER BY stream, version",
        (guild,),
    )
    return [
        (int(s), int(v), ev.decode(d, t, sv), str(c), str(tx))  # type: ignore[call-overload, arg-type]
        for s, v, t, sv, d, c, tx in rows
    ]


@pytest.mark.parametrize("writers", ["commands", "two-batchers"])
def test_concurrent_random_transfers(
    env: LedgerEnv, append_errors: Counter[str], writers: str
) -> None:
    """`commands`: one transaction per command. `two-batchers`: two batched writers, each
    remembering state rows (D20) that the other one keeps moving, as two gateway processes
    would: their stale rows must cost retries, never a lost update or a wrong refusal."""
    print(f"transfer seed: LEDGER_TEST_SEED={SEED}")
    rng = random.Random(SEED)
    for member in MEMBERS:
        env.run(
            env.ledger.execute(
                cmd.AdminGrant(
                    guild_id=G,
                    command_id=f"fund-{member}",
                    member_id=member,
                    actor=ADMIN,
                    lc=FUNDING,
                    at=T0,
                )
            )
        )
    plans: list[list[cmd.Transfer]] = []
    for client in range(CLIENTS):
        plan = []
        for n in range(PER_CLIENT):
            from_id, to_id = rng.sample(MEMBERS, 2)
            amount = 0 if rng.random() < 0.03 else rng.randint(1, 120)
            plan.append(
                cmd.Transfer(
                    guild_id=G,
                    command_id=f"t-{client}-{n}",
                    from_id=from_id,
                    to_id=to_id,
                    amount=amount,
                    at=T0 + timedelta(seconds=n),
                )
            )
        plans.append(plan)

    succeeded: dict[str, tuple[cmd.Transfer, Outcome]] = {}
    failed: dict[str, LedgerError] = {}

    async def client(plan: list[cmd.Transfer], execute: Execute) -> None:
        for command in plan:
            try:
                succeeded[command.command_id] = (command, await execute(command))
            except LedgerError as exc:
                failed[command.command_id] = exc

    async def all_clients() -> None:
        if writers == "commands":
            await asyncio.gather(*(client(plan, env.ledger.execute) for plan in plans))
            return
        batchers = [CommandBatcher(BatchIngestor(env.store)) for _ in range(2)]
        runners = [asyncio.create_task(b.run()) for b in batchers]
        try:
            await asyncio.gather(
                *(client(plan, batchers[i % 2].execute) for i, plan in enumerate(plans))
            )
        finally:
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)

    env.run(all_clients())
    print(
        f"{len(succeeded)} succeeded, {len(failed)} refused "
        f"({Counter(type(e).__name__ for e in failed.values())}), "
        f"append conflicts by SQLSTATE: {dict(append_errors)}"
    )
    assert len(succeeded) + len(failed) == CLIENTS * PER_CLIENT
    assert "40P01" not in append_errors, "deadlock between concurrent appends"
    assert all(isinstance(e, InsufficientFunds | InvalidAmount | Conflict) for e in failed.values())
    assert succeeded, "no transfer went through"

    # Committed write-side state: conserved and never negative.
    state_rows = {
        int(stream): decode_state(state)  # type: ignore[call-overload, arg-type]
        for stream, state in env.sql(
            "SELECT stream, state::text FROM streams WHERE guild_id = %s AND stream <> 0", (G,)
        )
    }
    assert sorted(state_rows) == MEMBERS
    expected_total = len(MEMBERS) * (25 + FUNDING)
    assert sum(s.balance for s in state_rows.values()) == expected_total
    assert all(s.balance >= 0 for s in state_rows.values())

    # The fold of the log agrees, and minted - burned equals the total; transfers are zero-sum.
    events = log_events(env, G)
    by_stream: dict[int, list[ev.AnyEvent]] = {}
    for stream, version, event, _, _ in events:
        by_stream.setdefault(stream, []).append(event)
        assert version == len(by_stream[stream])  # gap-free stream versions
    for stream, stream_events in by_stream.items():
        running = 0
        for event in stream_events:
            running += lc_delta(event)
            assert running >= 0
        assert fold(stream_events) == state_rows[stream]
    transfer_types = (ev.TransferSent, ev.TransferReceived)
    minted_minus_burned = sum(
        lc_delta(e) for _, _, e, _, _ in events if not isinstance(e, transfer_types)
    )
    assert minted_minus_burned == expected_total
    assert sum(lc_delta(e) for _, _, e, _, _ in events if isinstance(e, transfer_types)) == 0

    # Every successful command's events are in the log exactly once; failed ones left nothing.
    per_command: dict[str, list[tuple[ev.AnyEvent, str]]] = {}
    for _, _, event, command_id, tx in events:
        per_command.setdefault(command_id, []).append((event, tx))
    positions = dict(
        env.sql(
            "SELECT meta->>'command_id', array_agg(position ORDER BY position) FROM events"
            " WHERE guild_id = %s GROUP BY 1",
            (G,),
        )
    )
    for command_id, (command, outcome) in succeeded.items():
        assert not outcome.replayed
        recorded = per_command[command_id]
        assert sorted(ev.event_type(e) for e, _ in recorded) == sorted(outcome.events)
        assert positions[command_id] == outcome.positions
        sent = [e for e, _ in recorded if isinstance(e, ev.TransferSent)]
        received = [e for e, _ in recorded if isinstance(e, ev.TransferReceived)]
        assert len(sent) == len(received) == 1
        assert sent[0].member_id == command.from_id and received[0].member_id == command.to_id
        assert sent[0].amount == received[0].amount == command.amount
        assert len({tx for _, tx in recorded}) == 1  # both halves in one transaction
    for command_id in failed:
        assert command_id not in per_command
    assert env.sql(
        "SELECT count(*) FROM commands WHERE guild_id = %s AND command_id LIKE 't-%%'", (G,)
    ) == [(len(succeeded),)]


@pytest.mark.parametrize("already_joined", [True, False], ids=["joined", "new-member"])
def test_concurrent_message_xp_for_one_member_grants_once_per_cooldown(
    env: LedgerEnv, append_errors: Counter[str], already_joined: bool
) -> None:
    member = 77
    if already_joined:
        env.run(env.ledger.execute(cmd.Join(guild_id=G, command_id="join", member_id=member)))

    commands = [
        cmd.GrantMessageXp(
            guild_id=G,
            command_id=f"msg-{n}",
            member_id=member,
            channel_id=900,
            message_id=10_000 + n,
            at=T0 + timedelta(seconds=n * 3),  # all within one 60 s window
            entropy=n,
        )
        for n in range(CLIENTS)
    ]

    async def burst() -> list[Outcome | BaseException]:
        return list(
            await asyncio.gather(*(env.ledger.execute(c) for c in commands), return_exceptions=True)
        )

    results = env.run(burst())
    print(f"append conflicts by SQLSTATE: {dict(append_errors)}")
    outcomes = [r for r in results if isinstance(r, Outcome)]
    errors = [r for r in results if not isinstance(r, Outcome)]
    assert all(isinstance(e, Conflict) for e in errors), errors
    assert "40P01" not in append_errors
    granted = [o for o in outcomes if o.appended]
    assert len(granted) == 1
    assert all(o.note == "cooldown" for o in outcomes if not o.appended)
    rows = env.sql(
        "SELECT meta->>'command_id' FROM events WHERE guild_id = %s AND type = 'xp_granted'",
        (G,),
    )
    assert rows == [(granted[0].command_id,)]
    state = env.sql(
        "SELECT state::text FROM streams WHERE guild_id = %s AND stream = %s", (G, member)
    )
    assert decode_state(state[0][0]).xp == granted[0].value  # type: ignore[arg-type]
