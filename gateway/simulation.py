"""Simulated guild traffic for `ledger demo` and benchmarks: deterministic for a seed.

A guild's members are Zipf-distributed in activity (a few chat constantly, most rarely). The
simulated clock runs over `days` days so cooldowns, daily streaks, voice windows and
leaderboard periods all come into play.

Traffic goes through the gateway's own code paths: what the listeners see (messages, a few of
them from bots and webhooks, reactions, voice-state changes, joins through invites) is fed to
the same voice and invite trackers and the same handlers (`gateway.handlers`) the bot's
listeners and scheduler use; what members do with slash commands (games, pay, daily, items,
warnings, admin grants) is submitted as the ledger commands those commands build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from gateway import handlers
from gateway.handlers import MemberJoined, MessageSeen, ReactionSeen, Result
from gateway.invites import InviteTracker, InviteUses
from gateway.voice import VoiceStateSeen, VoiceTickDue, VoiceTracker, window_index
from ledger import commands as cmd
from ledger.errors import LedgerError
from ledger.guild_config import DEFAULT_CONFIG
from ledger.ingest import CommandBatcher
from ledger.runtime import Services

START = datetime(2026, 10, 1, tzinfo=UTC)
CHANNELS = (11, 12, 13, 14)
VOICE_CHANNELS = (31, 32)
NO_XP_CHANNEL = 19
BOOSTER_ROLE = 21
MODERATOR = 1  # member 1 moderates the simulated guild
MUSIC_BOT = 3  # posts now-playing messages and sits in voice: never rewarded
# (action, weight): roughly a busy community server's mix
ACTIONS = (
    ("message", 62),
    ("voice", 6),
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

Traffic = MessageSeen | ReactionSeen | MemberJoined | VoiceTickDue | cmd.AnyCommand
"""One thing that happens: a gateway event for a handler, or a slash command's ledger command."""


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
    ignored: int = 0  # gateway events the handlers did not forward (bots, webhooks)
    noop: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    def record(self, result: Result) -> None:
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


@dataclass
class _Voice:
    """Simulated voice presence: the tracker the scheduler reads, and when people leave."""

    guild_id: int
    tracker: VoiceTracker = field(default_factory=VoiceTracker)
    leaving: list[tuple[datetime, int]] = field(default_factory=list)  # heap of (at, member)
    muted: dict[int, bool] = field(default_factory=dict)
    window: int = -1

    def act(self, rng: random.Random, member: int, roles: frozenset[int], at: datetime) -> None:
        """Join a voice channel for 5-25 minutes, or toggle mute when already in one."""
        if member in self.muted:
            self.muted[member] = not self.muted[member]
            channel: int | None = self._channel(member)
        else:
            self.muted[member] = rng.random() < 0.15
            channel = VOICE_CHANNELS[0] if rng.random() < 0.7 else VOICE_CHANNELS[1]
            heapq.heappush(self.leaving, (at + timedelta(minutes=rng.uniform(5, 25)), member))
        state = VoiceStateSeen(self.guild_id, member, channel, self.muted[member], at, False, roles)
        self.tracker.update(state)

    def _channel(self, member: int) -> int | None:
        session = self.tracker.sessions.get(self.guild_id, {}).get(member)
        return session.channel_id if session else None

    def advance(self, at: datetime) -> list[VoiceTickDue]:
        """Members whose time is up leave; at each new window, the ticks due (the job's work)."""
        while self.leaving and self.leaving[0][0] <= at:
            left_at, member = heapq.heappop(self.leaving)
            self.muted.pop(member, None)
            self.tracker.update(VoiceStateSeen(self.guild_id, member, None, False, left_at))
        seconds = DEFAULT_CONFIG.voice_tick_seconds
        if window_index(at, seconds) == self.window:
            return []
        self.window = window_index(at, seconds)
        return self.tracker.due(
            self.guild_id, at, seconds, DEFAULT_CONFIG.voice_min_humans, source="demo"
        )


def generate(config: SimulationConfig) -> Iterator[Traffic]:
    """An endless, seed-determined stream of traffic over the simulated clock."""
    rng = random.Random(config.seed)
    members = list(range(4, config.members + 4))
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(members))]
    actions, action_weights = zip(*ACTIONS, strict=True)
    step = timedelta(days=config.days) / max(1, int(config.events * 0.8))
    boosters = set(rng.sample(members, k=max(1, len(members) // 10)))
    guild, seed = config.guild_id, config.seed
    moderator = cmd.Actor(MODERATOR, is_moderator=True, is_admin=True)
    recent: deque[tuple[int, int]] = deque(maxlen=200)  # (message id, author)
    warnings: list[tuple[int, str]] = []
    voice = _Voice(guild)
    voice.tracker.update(VoiceStateSeen(guild, MUSIC_BOT, VOICE_CHANNELS[0], False, START, True))
    invites, invite_uses = InviteTracker(), dict[str, InviteUses]()
    next_invitee = config.members + 1000
    speaker = members[0]
    n = 0
    while True:
        n += 1
        at = START + step * n
        yield from voice.advance(at)
        # conversations come in bursts: the last speaker often talks again within the cooldown
        member = speaker if rng.random() < 0.3 else rng.choices(members, weights)[0]
        roles = frozenset({BOOSTER_ROLE}) if member in boosters else frozenset()
        action = rng.choices(actions, action_weights)[0]
        cid = f"demo-{seed}-{n}"
        base = _Fields(guild_id=guild, command_id=cid, at=at, source="demo")
        if action == "message":
            message_id = 10**15 + (seed % 10_000) * 10**10 + n
            channel = NO_XP_CHANNEL if rng.random() < 0.05 else rng.choice(CHANNELS)
            entropy = rng.getrandbits(32)
            if rng.random() < 0.02:  # the music bot or a webhook: the handler drops it
                bot = rng.random() < 0.5
                author = MUSIC_BOT if bot else member
                yield MessageSeen(
                    guild,
                    channel,
                    message_id,
                    author,
                    is_bot=bot,
                    is_webhook=not bot,
                    at=at,
                    source="demo",
                )
                continue
            speaker = member
            recent.append((message_id, member))
            yield MessageSeen(
                guild, channel, message_id, member, roles, at=at, entropy=entropy, source="demo"
            )
        elif action == "voice":
            voice.act(rng, member, roles, at)
        elif action == "reaction" and recent:
            message_id, author = rng.choice(recent)
            yield ReactionSeen(
                guild, rng.choice(CHANNELS), message_id, author, member, at=at, source="demo"
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
            code = f"inv{member}"
            if code not in invite_uses:  # on_invite_create
                invite_uses[code] = InviteUses(code, member, 0)
                invites.created(guild, invite_uses[code])
            used = invite_uses[code]
            invite_uses[code] = dataclasses.replace(used, uses=used.uses + 1)
            next_invitee += 1  # on_member_join: the listener diffs the invites
            inviter = invites.resolve(guild, invite_uses.values())
            yield MemberJoined(guild, next_invitee, inviter, at=at, source="demo")
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


def _member_of(item: Traffic) -> int:
    """The member whose stream the item writes first (how writers are partitioned)."""
    match item:
        case MessageSeen(author_id=member):
            return member
        case MemberJoined(member_id=member, inviter_id=inviter):
            return inviter or member  # the newcomer's stream is new: the inviter's is hot
        case ReactionSeen(author_id=author):
            return author or 0
        case VoiceTickDue(member_id=member):
            return member
    return (item.members() or (0,))[0]


async def dispatch(services: Services, item: Traffic) -> list[Result] | None:
    """Hand one item to its handler (or, for a slash command's command, to the batcher); the
    ledger's results, or None when the handler did not forward it."""
    match item:
        case MessageSeen():
            result = await handlers.message_seen(services, item)
            return None if result is None else [result]
        case ReactionSeen():
            result = await handlers.reaction_added(services, item)
            return None if result is None else [result]
        case MemberJoined():
            joined = await handlers.member_joined(services, item)
            if joined is None:
                return None
            return [joined.join] if joined.invite is None else [joined.join, joined.invite]
        case VoiceTickDue():
            return [await handlers.voice_tick(services, item)]
    return [await services.batcher.submit(item)]


async def simulate(
    services: Services,
    batchers: Sequence[CommandBatcher],
    config: SimulationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationReport:
    """Run traffic until about `config.events` events were appended.

    Items are in flight concurrently, as gateway events are, and spread over `batchers` (each
    its own transaction stream, standing for one writer process), so writers really contend on
    shared members.
    """
    report = SimulationReport()
    for setting in setup_commands(config):
        report.record(await services.ledger.execute(setting))
    writers = [dataclasses.replace(services, batcher=batcher) for batcher in batchers]
    in_flight = asyncio.Semaphore(256 * len(writers))
    tasks: set[asyncio.Task[None]] = set()

    async def run(item: Traffic, writer: Services) -> None:
        try:
            results = await dispatch(writer, item)
            if results is None:
                report.ignored += 1
            for result in results or ():
                report.record(result)
        except LedgerError as exc:  # a batch that kept conflicting, or the database away
            report.record(exc)
        finally:
            in_flight.release()
        if progress:
            progress(min(report.events, config.events), config.events)

    for item in generate(config):
        if report.events >= config.events:
            break
        await in_flight.acquire()
        # a member's commands go to one writer (as a deployment partitions its writers), so
        # writers contend only on commands that touch two members: transfers, invites
        writer = writers[_member_of(item) % len(writers)]
        task = asyncio.create_task(run(item, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))
    if progress:
        progress(config.events, config.events)
    return report
