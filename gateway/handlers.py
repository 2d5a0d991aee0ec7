"""What the listeners, the scheduler and the demo call: gateway facts in, ledger results out.

Each handler takes a small frozen record of what happened on Discord (no discord.py types) and
the `Services`, turns it into a ledger command submitted through the group-committing batcher,
and returns the ledger's result (`Outcome`, or the `LedgerError` that refused it) so a caller
can reply or announce. Handlers decide nothing: bots, webhooks, system messages and DMs are not
forwarded, everything else is, and the ledger's rules decide (cooldowns, no-XP channels,
self-reactions, reaction caps, listeners in voice, invite rewards once).

Command ids are deterministic, so two bot instances seeing the same event, or a retry, never
apply it twice: the message id for message XP, `react:{message}:{reactor}`, `join:{guild}:
{member}`, `invite:{guild}:{member}`, `voice:{guild}:{member}:{tick_index}`,
`expire:{warning_id}`.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from gateway.voice import VoiceTickDue
from ledger import commands as cmd
from ledger.errors import LedgerError
from ledger.runtime import Services
from ledger.service import MAX_COMMAND_ID, Outcome

Result = Outcome | LedgerError


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class MessageSeen:
    """A message was posted. `guild_id` is 0 in DMs.

    `entropy` fixes the XP roll for replayable simulations; the bot leaves it None (random).
    """

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int
    role_ids: frozenset[int] = frozenset()
    is_bot: bool = False
    is_webhook: bool = False
    is_dm: bool = False
    is_system: bool = False
    at: datetime = field(default_factory=_now)
    entropy: int | None = None
    source: str = "discord"


@dataclass(frozen=True, slots=True)
class ReactionSeen:
    """`reactor_id` added a reaction to message `message_id` by `author_id` (None: unknown)."""

    guild_id: int
    channel_id: int
    message_id: int
    author_id: int | None
    reactor_id: int
    reactor_is_bot: bool = False
    author_is_bot: bool = False
    is_dm: bool = False
    at: datetime = field(default_factory=_now)
    source: str = "discord"


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member joined the guild, through `inviter_id`'s invite when invite tracking knows."""

    guild_id: int
    member_id: int
    inviter_id: int | None = None
    is_bot: bool = False
    at: datetime = field(default_factory=_now)
    source: str = "discord"


@dataclass(frozen=True, slots=True)
class WarningDue:
    """A warning whose expiry has passed (found by the scheduler)."""

    guild_id: int
    member_id: int
    warning_id: str
    at: datetime = field(default_factory=_now)
    source: str = "scheduler"


@dataclass(frozen=True, slots=True)
class JoinResults:
    """The wallet opening, and the invite reward when there was an inviter."""

    join: Result
    invite: Result | None = None


def derived_id(prefix: str, key: str) -> str:
    """`prefix:key`, or `prefix:#digest` when that would exceed the ledger's id length."""
    command_id = f"{prefix}:{key}"
    if len(command_id) <= MAX_COMMAND_ID:
        return command_id
    return f"{prefix}:#{hashlib.sha256(key.encode()).hexdigest()[:40]}"


async def message_seen(services: Services, seen: MessageSeen) -> Result | None:
    """Message XP for a member's message; None when the message is not forwarded."""
    if seen.is_bot or seen.is_webhook or seen.is_dm or seen.is_system:
        return None
    command = cmd.GrantMessageXp(
        guild_id=seen.guild_id,
        command_id=str(seen.message_id),
        member_id=seen.author_id,
        channel_id=seen.channel_id,
        message_id=seen.message_id,
        role_ids=seen.role_ids,
        at=seen.at,
        source=seen.source,
    )
    if seen.entropy is not None:
        command = msgspec.structs.replace(command, entropy=seen.entropy)
    return await services.batcher.submit(command)


async def reaction_added(services: Services, seen: ReactionSeen) -> Result | None:
    """Reaction XP to the message's author; None when not forwarded (bots, DMs, no author)."""
    if seen.is_dm or seen.reactor_is_bot or seen.author_is_bot or seen.author_id is None:
        return None
    return await services.batcher.submit(
        cmd.ReactionReceived(
            guild_id=seen.guild_id,
            command_id=f"react:{seen.message_id}:{seen.reactor_id}",
            author_id=seen.author_id,
            reactor_id=seen.reactor_id,
            message_id=seen.message_id,
            channel_id=seen.channel_id,
            at=seen.at,
            source=seen.source,
        )
    )


async def member_joined(services: Services, joined: MemberJoined) -> JoinResults | None:
    """Open the newcomer's wallet and reward the invite (both sides); None for bots."""
    if joined.is_bot:
        return None
    guild, member = joined.guild_id, joined.member_id
    join = services.batcher.submit(
        cmd.Join(
            guild_id=guild,
            command_id=f"join:{guild}:{member}",
            member_id=member,
            at=joined.at,
            source=joined.source,
        )
    )
    if joined.inviter_id is None:
        return JoinResults(join=await join)
    invite = services.batcher.submit(
        cmd.RewardInvite(
            guild_id=guild,
            command_id=f"invite:{guild}:{member}",
            inviter_id=joined.inviter_id,
            invitee_id=member,
            at=joined.at,
            source=joined.source,
        )
    )
    joined_result, invite_result = await asyncio.gather(join, invite)
    return JoinResults(join=joined_result, invite=invite_result)


async def voice_tick(services: Services, tick: VoiceTickDue) -> Result:
    """One member's voice tick, with the unmuted humans in their channel."""
    return await services.batcher.submit(
        cmd.VoiceTick(
            guild_id=tick.guild_id,
            command_id=f"voice:{tick.guild_id}:{tick.member_id}:{tick.tick_index}",
            member_id=tick.member_id,
            channel_id=tick.channel_id,
            unmuted_humans=tick.unmuted_humans,
            role_ids=tick.role_ids,
            at=tick.at,
            source=tick.source,
        )
    )


async def warning_due(services: Services, due: WarningDue) -> Result:
    """Retire a warning whose expiry has passed (the ledger checks it is due and active)."""
    return await services.batcher.submit(
        cmd.ExpireWarning(
            guild_id=due.guild_id,
            command_id=derived_id("expire", due.warning_id),
            member_id=due.member_id,
            warning_id=due.warning_id,
            at=due.at,
            source=due.source,
        )
    )
