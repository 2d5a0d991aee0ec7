"""A big synthetic guild for the projection benchmarks (P4-P7), generated inside PostgreSQL.

Members cycle through `VARIANTS` event templates built here with the ledger's own event types
and encoded with `ledger.events.encode`: a join, message, reaction and voice XP, a quest grant
spreading the leaderboard, level changes where the level moves, a daily, a transfer pair with a
partner member (member i and i ^ 1 send each other 5 LC, so transfers stay zero-sum), and for
some members games, items, a multiplier and warnings: every projector has work. Each member's
state row is the template's fold (`ledger.member.fold`), so the write side stays consistent.

Rows are made by one `INSERT ... SELECT generate_series` per chunk of members: the templates go
in as one jsonb parameter (constant-time element access), the member's and partner's ids are
substituted into the payload text. Within a chunk, blocks of `BLOCK` members are interleaved in
time (every member's first event, then every member's second, ...), so a projector batch meets
a few thousand distinct members, as it would in a busy guild, not one member's whole stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from ledger import events as ev
from ledger.levels import level_for_xp
from ledger.member import encode_state, fold

VARIANTS = 512
BLOCK = 5_000
MEMBER_BASE = 10**17  # snowflake-sized, even: a member's transfer partner is id ^ 1
MODERATOR = MEMBER_BASE - 2
START = datetime(2026, 3, 2, tzinfo=UTC)
_MEMBER = 7_777_777_777_777_777_771  # ids in the encoded templates, replaced by marks
_PARTNER = 7_777_777_777_777_777_773
MEMBER_MARK, PARTNER_MARK = "@M@", "@P@"
CHANNELS = (11, 12, 13, 14)

GENERATE_EVENTS = """
INSERT INTO events (guild_id, stream, version, type, schema_version, data, meta)
SELECT %(guild)s, m.id, s.slot + 1, t.e ->> 0, 1,
       replace(replace(t.e ->> 1, %(member)s, m.id::text), %(partner)s, (m.id # 1)::text)::jsonb,
       '{"command_id": "bench-synthetic", "source": "bench"}'::jsonb
  FROM generate_series(0, %(blocks)s - 1) AS b(n)
 CROSS JOIN LATERAL generate_series(0, %(slots)s - 1 + 0 * b.n) AS s(slot)
 CROSS JOIN LATERAL generate_series(
         %(first)s + b.n * %(block)s,
         least(%(first)s + (b.n + 1) * %(block)s, %(end)s) - 1 + 0 * s.slot) AS m(id)
 CROSS JOIN LATERAL (
       SELECT %(templates)s::jsonb -> ((m.id - %(base)s) %% %(variants)s)::int -> s.slot) AS t(e)
 WHERE t.e IS NOT NULL
"""

GENERATE_STATES = """
INSERT INTO streams (guild_id, stream, version, state)
SELECT %(guild)s, m.id, (%(lengths)s::int8[])[1 + v.n], %(states)s::jsonb -> v.n
  FROM generate_series(%(first)s, %(end)s - 1) AS m(id)
 CROSS JOIN LATERAL (SELECT ((m.id - %(base)s) %% %(variants)s)::int) AS v(n)
"""

COUNT_EVENTS = "SELECT count(*) FROM events"
MEMBERS = "SELECT count(*) FROM streams WHERE guild_id = %s AND stream <> 0"


Group = Callable[[], list[ev.Event]]


def _variant(v: int, seed: int) -> list[ev.Event]:
    """One member's events (placeholder ids), in stream and time order, with level changes."""
    rng = random.Random(seed * 1_000_003 + v)
    clock = START + timedelta(days=v % 28, hours=rng.randrange(24), minutes=rng.randrange(60))

    def at() -> datetime:
        nonlocal clock
        clock += timedelta(minutes=rng.randint(2, 400))
        return clock

    def xp(source: str, base: int, **extra: Any) -> Group:
        return lambda: [
            ev.XpGranted(
                member_id=_MEMBER, at=at(), source=source, base=base, multiplier_pct=100,
                xp=base, **extra,
            )
        ]  # fmt: skip

    def game(pct: int) -> ev.GamePlayed:
        won = rng.random() < 0.5
        return ev.GamePlayed(
            member_id=_MEMBER, at=at(), game="coinflip", won=won, base_xp=10,
            multiplier_pct=pct, xp=10 * pct // 100, bet=10, payout=20 if won else 0,
        )  # fmt: skip

    def daily() -> list[ev.Event]:
        when = at()
        return [
            ev.DailyClaimed(member_id=_MEMBER, at=when, day=when.toordinal(), streak=1, amount=50)
        ]

    def jackpot() -> list[ev.Event]:
        return [
            ev.ItemGranted(member_id=_MEMBER, at=at(), item="jackpot", quantity=2, source="shop"),
            ev.JackpotOpened(
                member_id=_MEMBER, at=at(), item="jackpot", amount=rng.randint(10, 99)
            ),
        ]

    def boost() -> list[ev.Event]:
        return [
            ev.ItemGranted(member_id=_MEMBER, at=at(), item="xp_boost", quantity=1, source="shop"),
            ev.MultiplierActivated(
                member_id=_MEMBER, at=at(), item="xp_boost", factor_pct=200, games=3
            ),
            game(200),
        ]

    def warning() -> list[ev.Event]:
        issued, wid = at(), f"w{v}"
        events: list[ev.Event] = [
            ev.WarningIssued(
                member_id=_MEMBER, at=issued, warning_id=wid, moderator_id=MODERATOR,
                reason="spam", expires_at=issued + timedelta(days=30),
            )
        ]  # fmt: skip
        if rng.random() < 0.5:
            events.append(
                ev.WarningPardoned(
                    member_id=_MEMBER, at=at(), warning_id=wid, moderator_id=MODERATOR
                )
            )
        return events

    groups: list[Group] = [
        xp(
            "message",
            rng.randint(15, 25),
            channel_id=rng.choice(CHANNELS),
            ref_id=rng.getrandbits(40),
        )
        for _ in range(rng.randint(2, 4))
    ]
    groups.append(xp("quest", round(math.exp(rng.uniform(math.log(20), math.log(60_000))))))
    groups.append(lambda: [ev.TransferSent(member_id=_MEMBER, at=at(), to_id=_PARTNER, amount=5)])
    groups.append(
        lambda: [ev.TransferReceived(member_id=_MEMBER, at=at(), from_id=_PARTNER, amount=5)]
    )
    optional: list[tuple[float, Group]] = [
        (0.5, xp("reaction", 5, ref_id=rng.getrandbits(40))),
        (0.3, xp("voice", 10, channel_id=31, seconds=300)),
        (0.6, daily),
        (0.3, lambda: [game(100)]),
        (0.2, jackpot),
        (0.1, boost),
        (1 / 16, warning),
    ]
    groups += [group for chance, group in optional if rng.random() < chance]
    rng.shuffle(groups)
    stream: list[ev.Event] = [ev.MemberJoined(member_id=_MEMBER, at=at(), starting_balance=25)]
    for group in groups:
        stream.extend(group())
    return _with_level_changes(stream)


def _with_level_changes(stream: list[ev.Event]) -> list[ev.Event]:
    """The stream with a LevelChanged after each event that moves the member's level."""
    out: list[ev.Event] = []
    total, level = 0, 0
    for event in stream:
        out.append(event)
        if isinstance(event, ev.XpGranted | ev.GamePlayed):
            total += event.xp
            new = level_for_xp(total)
            if new != level:
                out.append(
                    ev.LevelChanged(member_id=_MEMBER, at=event.at, old_level=level, new_level=new)
                )
                level = new
    return out


def _pair(event: ev.Event) -> list[str]:
    payload = ev.encode(event).decode()
    for value, placeholder in ((_MEMBER, MEMBER_MARK), (_PARTNER, PARTNER_MARK)):
        payload = payload.replace(str(value), placeholder)
    return [ev.event_type(event), payload]


class Templates:
    """Every variant's encoded events and state row, ready to be bound as parameters."""

    def __init__(self, seed: int = 1) -> None:
        self.streams = [_variant(v, seed) for v in range(VARIANTS)]
        self.lengths = [len(s) for s in self.streams]
        # [[[type, payload text], ...], ...] per variant (payloads hold the placeholders)
        self.events_json = msgspec.json.encode(
            [[_pair(e) for e in stream] for stream in self.streams]
        ).decode()
        # [state, ...] per variant: the fold of its events, as the streams table stores it
        states = [msgspec.json.decode(encode_state(fold(list(s)))) for s in self.streams]  # type: ignore[arg-type]
        self.states_json = msgspec.json.encode(states).decode()

    def events_for(self, first: int, count: int) -> int:
        """How many events members `first` .. `first + count - 1` (indexes) have in all."""
        cycles, rest = divmod(count, VARIANTS)
        total = cycles * sum(self.lengths)
        start = first % VARIANTS
        return total + sum(self.lengths[(start + k) % VARIANTS] for k in range(rest))

    def members_for(self, first: int, events: int) -> int:
        """The fewest members (an even number) from index `first` on with `events` events."""
        per_member = sum(self.lengths) / VARIANTS
        count = max(2, int(events / per_member))
        while self.events_for(first, count) < events:
            count += 1
        return count + count % 2


@dataclass
class SyntheticGuild:
    """A guild grown in member-index order; members 0 .. `members - 1` exist."""

    guild_id: int
    templates: Templates = field(default_factory=Templates)
    members: int = 0

    @staticmethod
    def member_id(index: int) -> int:
        """The member id of a member index."""
        return MEMBER_BASE + index

    async def grow(
        self,
        pool: AsyncConnectionPool,
        members: int,
        chunk_events: int = 2_500_000,
        say: Callable[[str], None] | None = None,
    ) -> int:
        """Add members up to `members` in all (each chunk one transaction); return events added."""
        added = 0
        while self.members < members:
            count = self.templates.members_for(self.members, chunk_events)
            count = min(count, members - self.members + (members - self.members) % 2)
            added += await self._insert(pool, self.members, count)
            self.members += count
            if say is not None:
                say(f"   {self.members:,} members, {added:,} events generated")
        return added

    async def _insert(self, pool: AsyncConnectionPool, first: int, count: int) -> int:
        start = MEMBER_BASE + first
        params: dict[str, object] = {
            "guild": self.guild_id,
            "member": MEMBER_MARK,
            "partner": PARTNER_MARK,
            "blocks": -(-count // BLOCK),
            "slots": max(self.templates.lengths),
            "block": BLOCK,
            "first": start,
            "end": start + count,
            "base": MEMBER_BASE,
            "variants": VARIANTS,
            "templates": self.templates.events_json,
            "lengths": self.templates.lengths,
            "states": self.templates.states_json,
        }
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(GENERATE_EVENTS, params)
            added = cur.rowcount
            await conn.execute(GENERATE_STATES, params)
        return added


async def log_size(pool: AsyncConnectionPool) -> int:
    """Events in the whole log."""
    async with pool.connection() as conn:
        cur = await conn.execute(COUNT_EVENTS)
        row = await cur.fetchone()
    return int(row[0]) if row else 0
