"""Projection test helpers: simulated traffic, and checks that the read tables equal the fold.

The oracle is independent of the projectors: each member's stream is folded with the write
side's own `ledger.member.fold`, and the leaderboard histogram is recounted from the scores.
`verify` (the projectors' in-memory replay) is checked on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger import commands as cmd
from ledger import events as ev
from ledger.database import make_pool
from ledger.errors import LedgerError
from ledger.member import fold
from ledger.service import Ledger
from ledger.store import EventStore
from projections import catch_up, verify
from projections.engine import Engine
from projections.periods import ALL_TIME_CODE, BOARD_CODES, score_bucket
from projections.projectors import PROJECTORS
from tests.fix_db import LedgerEnv

G = 4242
ADMIN = cmd.Actor(9, is_moderator=True, is_admin=True)
START = datetime(2024, 3, 30, 21, 0, tzinfo=UTC)  # crosses a day, an ISO week and a month


KINDS = (
    "message",
    "voice",
    "reaction",
    "game",
    "daily",
    "invite",
    "transfer",
    "grant",
    "take",
    "item",
    "use",
    "warn",
    "pardon",
    "expire",
    "join",
)
WEIGHTS = (30, 10, 7, 9, 5, 3, 9, 3, 2, 5, 6, 5, 3, 2, 1)


def build_command(
    guild: int,
    cid: str,
    kind: str,
    member: int,
    other: int,
    n: int,
    entropy: int,
    at: datetime,
    open_warnings: list[tuple[int, str]],
) -> cmd.AnyCommand:
    """One command of `kind`; `n` sizes amounts, `entropy` picks items and rolls."""
    base = {"guild_id": guild, "command_id": cid, "at": at, "source": "demo"}
    if member == other:
        other = member + 1
    match kind:
        case "message":
            return cmd.GrantMessageXp(
                **base, member_id=member, channel_id=5, message_id=entropy + 1, entropy=entropy
            )
        case "voice":
            return cmd.VoiceTick(**base, member_id=member, channel_id=6, unmuted_humans=2)
        case "reaction":
            return cmd.ReactionReceived(
                **base, author_id=member, reactor_id=other, message_id=entropy % 50 + 1
            )
        case "game":
            won = entropy % 2 == 0
            return cmd.RecordGame(
                **base,
                member_id=member,
                game="dice",
                won=won,
                bet=n % 6,
                payout=n % 11 if won else 0,
            )
        case "daily":
            return cmd.ClaimDaily(**base, member_id=member)
        case "invite":
            return cmd.RewardInvite(**base, inviter_id=member, invitee_id=other)
        case "transfer":
            return cmd.Transfer(**base, from_id=member, to_id=other, amount=n % 30 + 1)
        case "grant":
            return cmd.AdminGrant(**base, member_id=member, actor=ADMIN, lc=n, xp=n * 7 + 1)
        case "take":
            return cmd.AdminTake(**base, member_id=member, actor=ADMIN, lc=n % 20 + 1)
        case "item":
            item = ("jackpot", "x2", "x3")[entropy % 3]
            return cmd.GrantItem(
                **base, member_id=member, item=item, quantity=n % 3 + 1, actor=ADMIN
            )
        case "use":
            item = ("jackpot", "x2", "x3")[entropy % 3]
            return cmd.UseItem(**base, member_id=member, item=item, entropy=entropy)
        case "warn":
            open_warnings.append((member, cid))
            return cmd.IssueWarning(**base, member_id=member, actor=ADMIN, reason=f"rule {n % 7}")
        case "pardon" if open_warnings:
            wm, wid = open_warnings.pop(entropy % len(open_warnings))
            return cmd.PardonWarning(**base, member_id=wm, actor=ADMIN, warning_id=wid)
        case "expire" if open_warnings:
            wm, wid = open_warnings.pop(0)
            later = {**base, "at": at + timedelta(days=31)}
            return cmd.ExpireWarning(**later, member_id=wm, warning_id=wid)
    return cmd.Join(**base, member_id=member)


@dataclass
class Traffic:
    """Seeded random commands for one guild, in time order."""

    seed: int
    members: int = 12
    guild_id: int = G

    def commands(self, count: int) -> list[cmd.AnyCommand]:
        """`count` commands of mixed kinds, `at` moving forward a few minutes each."""
        rng = random.Random(self.seed)
        out: list[cmd.AnyCommand] = []
        at = START
        warnings: list[tuple[int, str]] = []
        for i in range(count):
            at += timedelta(minutes=rng.randint(1, 45))
            kind = rng.choices(KINDS, WEIGHTS)[0]
            member, other = rng.sample(range(1, self.members + 1), 2)
            entropy = rng.getrandbits(20)
            prior = next((c for c in reversed(out) if isinstance(c, cmd.GrantItem)), None)
            if kind == "use" and prior is not None and rng.random() < 0.7:
                # Use what was granted last, so jackpots and multipliers really get used.
                member = prior.member_id
                entropy = entropy - entropy % 3 + ("jackpot", "x2", "x3").index(prior.item)
            out.append(
                build_command(
                    self.guild_id,
                    f"s{self.seed}-{i}",
                    kind,
                    member,
                    other,
                    rng.randint(0, 60),
                    entropy,
                    at,
                    warnings,
                )
            )
        return out


async def execute_all(env: LedgerEnv, commands: list[cmd.AnyCommand]) -> int:
    """Run commands through the service; refused ones (insufficient funds...) are skipped."""
    done = 0
    for command in commands:
        try:
            await env.ledger.execute(command)
            done += 1
        except LedgerError:
            pass
    return done


def simulate(env: LedgerEnv, seed: int, count: int, members: int = 12) -> None:
    """Append `count` seeded commands' events."""
    env.run(execute_all(env, Traffic(seed, members).commands(count)))


def revert_some(env: LedgerEnv, seed: int, how_many: int = 3) -> None:
    """Revert a few revertible events (compensating events in every projector)."""
    rows = env.sql(
        "SELECT position FROM events WHERE guild_id = %s AND type IN "
        "('lc_minted', 'xp_granted', 'transfer_sent', 'item_granted', 'daily_claimed') "
        "ORDER BY position",
        (G,),
    )
    rng = random.Random(seed)
    for i, (position,) in enumerate(rng.sample(rows, min(how_many, len(rows)))):
        revert = cmd.Revert(
            guild_id=G,
            command_id=f"rv{seed}-{i}",
            actor=ADMIN,
            positions=(position,),
            at=START + timedelta(days=5, minutes=i),
        )
        with contextlib.suppress(LedgerError):  # e.g. it would leave a balance negative
            env.run(env.ledger.execute(revert))


def project(env: LedgerEnv, batch_size: int = 50) -> int:
    """Catch every projector up (small batches, so tests cross many batch boundaries)."""
    return env.run(catch_up(env.store.pool, batch_size=batch_size))


def deliver(env: LedgerEnv, batch_size: int = 50) -> int:
    """Apply what is deliverable now and stop, without waiting for events held back by open
    transactions (which `catch_up` waits for); return the events read."""

    async def run() -> int:
        async with env.store.pool.connection() as conn:
            engine = Engine(conn, batch_size=batch_size, raise_errors=True)
            await engine.add(list(PROJECTORS.values()))
            total = 0
            while read := await engine.step():
                total += read
            return total

    return env.run(run())


def member_states(env: LedgerEnv) -> dict[tuple[int, int], object]:
    """Each member stream folded with the write side's own `evolve`."""
    rows = env.sql(
        "SELECT guild_id, stream, type, schema_version, data::text FROM events "
        "WHERE stream <> 0 ORDER BY guild_id, stream, version"
    )
    streams: dict[tuple[int, int], list[ev.AnyEvent]] = {}
    for guild, stream, type_name, schema, data in rows:
        streams.setdefault((guild, stream), []).append(ev.decode(data, type_name, schema))
    return {key: fold(events) for key, events in streams.items()}


def assert_tables_equal_fold(env: LedgerEnv) -> None:
    """The read tables hold what folding the log says; nothing was applied twice or lost."""
    states = member_states(env)
    balances = {
        (g, m): b for g, m, b in env.sql("SELECT guild_id, member_id, balance FROM balances")
    }
    assert balances == {k: s.balance for k, s in states.items() if s.joined}
    levels = {
        (g, m): (x, lv)
        for g, m, x, lv in env.sql("SELECT guild_id, member_id, xp, level FROM levels")
    }
    assert {k: v for k, v in levels.items() if v != (0, 0)} == {
        k: (s.xp, s.level) for k, s in states.items() if s.xp or s.level
    }
    items = {
        (g, m, i): q
        for g, m, i, q in env.sql("SELECT guild_id, member_id, item, quantity FROM inventory")
    }
    assert items == {(*k, i): q for k, s in states.items() for i, q in s.items.items()}
    multipliers = {
        (g, m): (i, f, n)
        for g, m, i, f, n in env.sql(
            "SELECT guild_id, member_id, item, factor_pct, games_left FROM active_multipliers"
        )
    }
    assert multipliers == {
        k: (s.multiplier.item, s.multiplier.factor_pct, s.multiplier.games_left)
        for k, s in states.items()
        if s.multiplier is not None
    }
    active = set(
        env.sql("SELECT guild_id, member_id, warning_id FROM warnings WHERE status = 'active'")
    )
    assert active == {(*k, w.warning_id) for k, s in states.items() for w in s.warnings}
    all_time_xp = env.sql(
        "SELECT guild_id, member_id, score FROM leaderboard_scores"
        " WHERE board = %s AND period = %s",
        (BOARD_CODES["xp"], ALL_TIME_CODE),
    )
    for guild, member, score in all_time_xp:
        assert score == states[(guild, member)].xp
    assert_histogram_matches_scores(env)
    assert_applied_once(env)
    report = env.run(verify(env.store.pool))
    assert report.ok, [d for t in report.tables for d in t.differences]


def assert_histogram_matches_scores(env: LedgerEnv) -> None:
    """leaderboard_buckets counts exactly the rows of leaderboard_scores."""
    counted = Counter(
        (g, b, p, score_bucket(s))
        for g, b, p, s in env.sql("SELECT guild_id, board, period, score FROM leaderboard_scores")
    )
    stored = {
        (g, b, p, k): n
        for g, b, p, k, n in env.sql(
            "SELECT guild_id, board, period, bucket, members FROM leaderboard_buckets"
        )
    }
    assert stored == dict(counted)


def assert_applied_once(env: LedgerEnv) -> None:
    """Each projector's applied count equals the events of its types up to its checkpoint."""
    for name, projector in PROJECTORS.items():
        rows = env.sql(
            "SELECT c.events_applied, (SELECT count(*) FROM events e WHERE e.type = ANY(%s) "
            "AND (e.tx, e.position) <= (c.tx, c.position)) FROM projector_checkpoints c "
            "WHERE c.projector = %s",
            (sorted(projector.type_names()), name),
        )
        if rows:
            applied, expected = rows[0]
            assert applied == expected, name


_databases = itertools.count()


@contextlib.contextmanager
def fresh_ledger(server_url: str, template: str, runner: asyncio.Runner) -> Iterator[LedgerEnv]:
    """A ledger over a new database cloned from the migrated template (one per hypothesis
    example: examples stay independent and equally cheap)."""
    name = f"proj_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    url = make_conninfo(server_url, dbname=name)
    pool = make_pool(url, min_size=1, max_size=8)
    runner.run(pool.open(wait=True))
    store = EventStore(pool)
    try:
        yield LedgerEnv(url=url, runner=runner, store=store, ledger=Ledger(store))
    finally:
        runner.run(pool.close())
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def traffic_env(env: LedgerEnv) -> LedgerEnv:
    """A ledger with a few hundred commands of mixed traffic already appended."""
    simulate(env, seed=7, count=300)
    revert_some(env, seed=7)
    return env
