"""Simulated guild traffic for `ledger demo` and benchmarks: deterministic for a seed.

A guild's members are Zipf-distributed in activity (a few chat constantly, most rarely). The
simulated clock runs over `days` days so cooldowns, daily streaks and leaderboard periods all
come into play. Traffic goes through the same entry points the bot uses: XP through the
batcher, everything else through `Ledger.execute`, from several concurrent writers.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from ledger import commands as cmd
from ledger.errors import LedgerError
from ledger.ingest import CommandBatcher
from ledger.service import Ledger, Outcome

START = datetime(2026, 10, 1, tzinfo=UTC)
CHANNELS = (11, 12, 13, 14)
NO_XP_CHANNEL = 19
BOOSTER_ROLE = 21
MODERATOR = 1  # member 1 moderates the simulated guild
# (action, weight): roughly a busy community server's mix
ACTIONS = (
    ("message", 62),
    ("voice", 12),
    ("reaction", 10),
    ("game", 6),
    ("transfer", 3),
    ("daily", 3),
    ("item_grant", 1),
    ("item_use", 1),
    ("invite", 1),
    ("warn", 0.5),
    ("pardon", 0.2),
    ("admin", 0.3),
)


class _Fields(TypedDict):
    guild_id: int
    command_id: str
    at: datetime
    source: str


@dataclass(frozen=True)
class SimulationConfig:
    """Size and shape of the simulated traffic."""

    guild_id: int
    members: int = 500
    events: int = 50_000
    seed: int = 1
    writers: int = 4
    days: int = 14


@dataclass
class SimulationReport:
    """What the simulation did."""

    commands: int = 0
    events: int = 0
    replayed: int = 0
    noop: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def record(self, result: Outcome | LedgerError) -> None:
        """Count one command's result."""
        self.commands += 1
        if isinstance(result, LedgerError):
            self.refused[type(result).__name__] += 1
        elif result.replayed:
            self.replayed += 1
        elif result.appended:
            self.events += len(result.events)
        else:
            self.noop[result.note] += 1


def setup_commands(config: SimulationConfig) -> list[cmd.ChangeConfig]:
    """Guild settings the traffic exercises: a no-XP channel, a booster role, a busy channel."""
    admin = cmd.Actor(MODERATOR, is_moderator=True, is_admin=True)
    settings: list[tuple[str, object]] = [
        ("no_xp_channels", [NO_XP_CHANNEL]),
        ("role_multipliers_pct", {BOOSTER_ROLE: 150}),
        ("channel_multipliers_pct", {CHANNELS[0]: 120}),
    ]
    return [
        cmd.ChangeConfig(
            guild_id=config.guild_id,
            command_id=f"demo-{config.seed}-config-{key}",
            actor=admin,
            key=key,
            value=value,
            at=START,
            source="demo",
        )
        for key, value in settings
    ]


def generate(config: SimulationConfig) -> Iterator[cmd.AnyCommand]:
    """An endless, seed-determined stream of commands over the simulated clock."""
    rng = random.Random(config.seed)
    members = list(range(2, config.members + 2))
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(members))]
    actions, action_weights = zip(*ACTIONS, strict=True)
    step = timedelta(days=config.days) / max(1, int(config.events * 0.8))
    boosters = set(rng.sample(members, k=max(1, len(members) // 10)))
    guild, seed = config.guild_id, config.seed
    moderator = cmd.Actor(MODERATOR, is_moderator=True, is_admin=True)
    message_ids: list[int] = []
    warnings: list[tuple[int, str]] = []
    next_invitee = config.members + 1000
    speaker = members[0]
    n = 0
    while True:
        n += 1
        at = START + step * n
        # conversations come in bursts: the last speaker often talks again within the cooldown
        member = speaker if rng.random() < 0.3 else rng.choices(members, weights)[0]
        roles = frozenset({BOOSTER_ROLE}) if member in boosters else frozenset()
        action = rng.choices(actions, action_weights)[0]
        cid = f"demo-{seed}-{n}"
        base = _Fields(guild_id=guild, command_id=cid, at=at, source="demo")
        if action == "message":
            speaker = member
            message_id = 10**15 + n
            message_ids.append(message_id)
            channel = NO_XP_CHANNEL if rng.random() < 0.05 else rng.choice(CHANNELS)
            yield cmd.GrantMessageXp(
                **base,
                member_id=member,
                channel_id=channel,
                message_id=message_id,
                role_ids=roles,
                entropy=rng.getrandbits(32),
            )
        elif action == "voice":
            yield cmd.VoiceTick(
                **base,
                member_id=member,
                channel_id=rng.choice(CHANNELS),
                unmuted_humans=rng.randint(1, 6),
                role_ids=roles,
            )
        elif action == "reaction" and message_ids:
            message_id = rng.choice(message_ids[-200:])
            author = members[(message_id * 7919) % len(members)]
            yield cmd.ReactionReceived(
                **base,
                author_id=author,
                reactor_id=member,
                message_id=message_id,
                channel_id=rng.choice(CHANNELS),
            )
        elif action == "game":
            bet = rng.choice((0, 0, 5, 10, 20))
            won = rng.random() < 0.48
            yield cmd.RecordGame(
                **base,
                member_id=member,
                game=rng.choice(("coinflip", "dice", "trivia")),
                won=won,
                bet=bet,
                payout=2 * bet if won else 0,
            )
        elif action == "transfer":
            other = rng.choice(members)
            yield cmd.Transfer(**base, from_id=member, to_id=other, amount=rng.randint(1, 40))
        elif action == "daily":
            yield cmd.ClaimDaily(**base, member_id=member)
        elif action == "item_grant":
            item = rng.choice(("jackpot", "jackpot", "x2", "x3"))
            yield cmd.GrantItem(**base, member_id=member, item=item, item_source="game")
        elif action == "item_use":
            item = rng.choice(("jackpot", "x2", "x3"))
            yield cmd.UseItem(**base, member_id=member, item=item, entropy=rng.getrandbits(32))
        elif action == "invite":
            next_invitee += 1
            yield cmd.RewardInvite(**base, inviter_id=member, invitee_id=next_invitee)
        elif action == "warn" and member != MODERATOR:
            warnings.append((member, cid))
            yield cmd.IssueWarning(
                **base, member_id=member, actor=moderator, reason="Simulated: spam in #general"
            )
        elif action == "pardon" and warnings:
            warned, warning_id = warnings.pop(rng.randrange(len(warnings)))
            yield cmd.PardonWarning(
                **base,
                member_id=warned,
                actor=moderator,
                warning_id=warning_id,
                reason="Simulated: appeal accepted",
            )
        elif action == "admin":
            yield cmd.AdminGrant(
                **base,
                member_id=member,
                actor=moderator,
                lc=rng.randint(10, 200),
                reason="Simulated: event prize",
            )


async def simulate(
    ledger: Ledger,
    batchers: Sequence[CommandBatcher],
    config: SimulationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationReport:
    """Run traffic until about `config.events` events were appended.

    Commands are in flight concurrently, as gateway events are, and spread over `batchers`
    (each its own transaction stream), so writers really contend on shared members.
    """
    report = SimulationReport()
    for setting in setup_commands(config):
        report.record(await ledger.execute(setting))
    in_flight = asyncio.Semaphore(256 * len(batchers))
    tasks: set[asyncio.Task[None]] = set()

    async def submit(command: cmd.AnyCommand, batcher: CommandBatcher) -> None:
        try:
            report.record(await batcher.submit(command))
        except LedgerError as exc:  # a batch that kept conflicting, or the database away
            report.record(exc)
        finally:
            in_flight.release()
        if progress:
            progress(min(report.events, config.events), config.events)

    for command in generate(config):
        if report.events >= config.events:
            break
        await in_flight.acquire()
        # a member's commands go to one writer (as a deployment partitions its writers), so
        # writers contend only on commands that touch two members: transfers, invites
        writer = batchers[(command.members() or (0,))[0] % len(batchers)]
        task = asyncio.create_task(submit(command, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))
    if progress:
        progress(config.events, config.events)
    return report
