"""The Discord listeners: translate discord.py objects into handler records, nothing more.

Wiring (the bot's `setup_hook`)::

    listeners = ListenersCog(bot, services)
    await bot.add_cog(listeners)
    scheduler = build_scheduler(services, listeners.voice, lambda: [g.id for g in bot.guilds])

Intents needed: guilds, guild_messages, guild_reactions, voice_states, members (joins, roles),
invites (invite tracking); message content is not needed. Level-ups are not announced here:
the outbox does it, once, from the log (`gateway.outbox`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import UTC, datetime

import discord
from discord.ext import commands

from gateway import handlers
from gateway.handlers import MemberJoined, MessageSeen, ReactionSeen
from gateway.invites import DiscordInviteTracking
from gateway.voice import VoiceStateSeen, VoiceTracker
from ledger.errors import LedgerError
from ledger.runtime import Services

log = logging.getLogger(__name__)


def role_ids(user: discord.abc.User | None) -> frozenset[int]:
    """The ids of a member's roles, @everyone aside (none for a plain user, as in DMs)."""
    roles: list[discord.Role] = getattr(user, "roles", None) or []
    return frozenset(role.id for role in roles if not role.is_default())


def message_seen(message: discord.Message) -> MessageSeen:
    """The handler record of a message."""
    return MessageSeen(
        guild_id=message.guild.id if message.guild else 0,
        channel_id=message.channel.id,
        message_id=message.id,
        author_id=message.author.id,
        role_ids=role_ids(message.author),
        is_bot=message.author.bot,
        is_webhook=message.webhook_id is not None,
        is_dm=message.guild is None,
        is_system=message.is_system(),
        at=message.created_at,
    )


def reaction_seen(
    payload: discord.RawReactionActionEvent, guild: discord.Guild | None
) -> ReactionSeen:
    """The handler record of a reaction (the author's bot flag from the member cache)."""
    author = (
        guild.get_member(payload.message_author_id) if guild and payload.message_author_id else None
    )
    return ReactionSeen(
        guild_id=payload.guild_id or 0,
        channel_id=payload.channel_id,
        message_id=payload.message_id,
        author_id=payload.message_author_id,
        reactor_id=payload.user_id,
        reactor_is_bot=bool(payload.member and payload.member.bot),
        author_is_bot=bool(author and author.bot),
        is_dm=payload.guild_id is None,
        at=datetime.now(UTC),
    )


def voice_state_seen(
    member: discord.Member, state: discord.VoiceState, at: datetime
) -> VoiceStateSeen:
    """The tracker record of a member's voice state; the AFK channel counts as out of voice."""
    channel = state.channel
    if channel is not None and channel == member.guild.afk_channel:
        channel = None
    return VoiceStateSeen(
        guild_id=member.guild.id,
        member_id=member.id,
        channel_id=channel.id if channel is not None else None,
        muted=state.self_mute or state.self_deaf or state.mute or state.deaf or state.suppress,
        at=at,
        is_bot=member.bot,
        role_ids=role_ids(member),
    )


def guild_voice_states(guild: discord.Guild, at: datetime) -> list[VoiceStateSeen]:
    """Everyone in a guild's voice and stage channels now (from the cache)."""
    return [
        voice_state_seen(member, member.voice, at)
        for channel in (*guild.voice_channels, *guild.stage_channels)
        for member in channel.members
        if member.voice is not None
    ]


class ListenersCog(commands.Cog):
    """Messages, reactions, voice states, joins and invites, forwarded to the handlers."""

    def __init__(
        self,
        bot: commands.Bot,
        services: Services,
        *,
        voice: VoiceTracker | None = None,
        invites: DiscordInviteTracking | None = None,
    ) -> None:
        self.bot = bot
        self.services = services
        self.voice = voice if voice is not None else VoiceTracker()
        self.invites = invites if invites is not None else DiscordInviteTracking()

    async def _forward(self, call: Awaitable[object]) -> None:
        """Await a handler; refusals come back as results, failures are logged."""
        try:
            await call
        except LedgerError as exc:
            log.warning("ledger did not record a gateway event: %s", exc.message)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Message XP."""
        await self._forward(handlers.message_seen(self.services, message_seen(message)))

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """Reaction XP to the message's author (raw: works on messages not in the cache)."""
        guild = self.bot.get_guild(payload.guild_id) if payload.guild_id else None
        await self._forward(handlers.reaction_added(self.services, reaction_seen(payload, guild)))

    @commands.Cog.listener()
    async def on_voice_state_update(
        self, member: discord.Member, before: discord.VoiceState, after: discord.VoiceState
    ) -> None:
        """Join, leave, move, mute: the tracker the voice-tick job reads."""
        self.voice.update(voice_state_seen(member, after, datetime.now(UTC)))

    @commands.Cog.listener()
    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        """Role changes of members in voice (roles feed the ledger's multipliers)."""
        if before.roles != after.roles:
            self.voice.roles_changed(after.guild.id, after.id, role_ids(after))

    @commands.Cog.listener()
    async def on_member_join(self, member: discord.Member) -> None:
        """Starting balance, and the invite reward when the inviter is known."""
        inviter = None if member.bot else await self.invites.inviter_of_join(member.guild)
        joined = MemberJoined(
            guild_id=member.guild.id,
            member_id=member.id,
            inviter_id=inviter,
            is_bot=member.bot,
            at=member.joined_at or datetime.now(UTC),
        )
        await self._forward(handlers.member_joined(self.services, joined))

    @commands.Cog.listener()
    async def on_invite_create(self, invite: discord.Invite) -> None:
        """Track a new invite's uses."""
        self.invites.invite_created(invite)

    @commands.Cog.listener()
    async def on_invite_delete(self, invite: discord.Invite) -> None:
        """An invite went away (deleted, expired or used up)."""
        self.invites.invite_deleted(invite)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """(Re)load voice sessions and invites of every guild (also after a reconnect)."""
        for guild in self.bot.guilds:
            await self._load_guild(guild)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        """The bot joined a guild."""
        await self._load_guild(guild)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot left a guild."""
        self.voice.forget_guild(guild.id)
        self.invites.tracker.forget_guild(guild.id)

    async def _load_guild(self, guild: discord.Guild) -> None:
        self.voice.reload_guild(guild.id, guild_voice_states(guild, datetime.now(UTC)))
        await self.invites.load_guild(guild)
