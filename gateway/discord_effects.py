"""The outbox's `SideEffectSender` over a connected discord.py client.

Wiring (the bot's `setup_hook`)::

    sender = DiscordSideEffectSender(bot)               # English announcement text
    sender = DiscordSideEffectSender(bot, render=fn)    # fn(guild, announcement) -> str

Announcements are sent with the delivery's nonce (discord.py sets `enforce_nonce`), so Discord
drops a resend of the same announcement made within a few minutes. Role changes and timeouts
are idempotent by nature. Missing targets (guild, member, channel, role) abandon the effect
(`GiveUp`); anything else (rate limits, outages, missing permissions) is retried with backoff.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import discord

from gateway.side_effects import (
    Delivery,
    GiveUp,
    LevelAnnouncement,
    LevelRoles,
    WarningAction,
)

# Discord refuses timeouts longer than 28 days.
MAX_TIMEOUT = timedelta(days=28)

Render = Callable[[discord.Guild, LevelAnnouncement], str]


def english_level_up(guild: discord.Guild, announcement: LevelAnnouncement) -> str:
    """The default announcement text."""
    return f"<@{announcement.member_id}> reached level {announcement.new_level}!"


class DiscordSideEffectSender:
    """Carries out outbox effects with Discord calls."""

    def __init__(self, client: discord.Client, *, render: Render = english_level_up) -> None:
        self.client = client
        self.render = render

    async def send(self, delivery: Delivery) -> None:
        """Carry out one effect; `GiveUp` when its target no longer exists."""
        await self.client.wait_until_ready()
        guild = self.client.get_guild(delivery.guild_id)
        if guild is None:
            raise GiveUp("the bot is not in this guild")
        try:
            match delivery.effect:
                case LevelAnnouncement() as announcement:
                    await self._announce(guild, announcement, delivery.nonce)
                case LevelRoles() as roles:
                    await self._sync_roles(guild, roles)
                case WarningAction() as action:
                    await self._timeout(guild, action)
        except discord.NotFound as exc:
            raise GiveUp(f"not found: {exc.text}") from exc

    async def _announce(
        self, guild: discord.Guild, announcement: LevelAnnouncement, nonce: str
    ) -> None:
        channel = guild.get_channel_or_thread(announcement.channel_id) or guild.system_channel
        if not isinstance(channel, discord.abc.Messageable):
            raise GiveUp("no channel to announce in")
        await channel.send(
            self.render(guild, announcement),
            nonce=nonce,
            allowed_mentions=discord.AllowedMentions(users=True, roles=False, everyone=False),
        )

    @staticmethod
    async def _member(guild: discord.Guild, member_id: int) -> discord.Member:
        return guild.get_member(member_id) or await guild.fetch_member(member_id)

    async def _sync_roles(self, guild: discord.Guild, change: LevelRoles) -> None:
        member = await self._member(guild, change.member_id)
        held = {role.id for role in member.roles}
        add = [r for r in map(guild.get_role, change.add) if r is not None and r.id not in held]
        remove = [r for r in map(guild.get_role, change.remove) if r is not None and r.id in held]
        reason = f"level {change.level} rewards"
        if add:
            await member.add_roles(*add, reason=reason)
        if remove:
            await member.remove_roles(*remove, reason=reason)

    async def _timeout(self, guild: discord.Guild, action: WarningAction) -> None:
        now = datetime.now(UTC)
        if action.action != "timeout" or action.until <= now:
            return  # nothing left to do: the timeout would already be over
        member = await self._member(guild, action.member_id)
        reason = f"{action.active_warnings} active warnings"
        await member.timeout(min(action.until, now + MAX_TIMEOUT), reason=reason)
