"""Invite tracking: which invite a newcomer used, from the change in invite use counts.

Discord does not say which invite a member joined through. The tracker caches each guild's
invites with their use counts; on a join the adapter fetches the current list and the tracker
diffs it: the one invite whose uses went up is the one used. A single-use invite disappears
when used (its delete event may even arrive before the join), so an invite that vanished one use
short of its limit is a candidate too. When the diff is ambiguous (two joins raced through
different invites, the cache was cold) the inviter is unknown and no invite reward is given:
better none than a wrong one.

`InviteTracker` is pure; `DiscordInviteTracking` is the thin discord.py adapter the listeners
use (fetching invites needs the Manage Server permission; without it the inviter is unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import discord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InviteUses:
    """An invite's code, creator (None: unknown or a bot), uses so far and limit (0: none)."""

    code: str
    inviter_id: int | None
    uses: int
    max_uses: int = 0


@dataclass
class InviteTracker:
    """Cached invite use counts per guild, and invites deleted since the last join."""

    invites: dict[int, dict[str, InviteUses]] = field(default_factory=dict)
    gone: dict[int, dict[str, InviteUses]] = field(default_factory=dict)

    def load(self, guild_id: int, invites: Iterable[InviteUses]) -> None:
        """Replace a guild's cache with its current invites."""
        self.invites[guild_id] = {i.code: i for i in invites}
        self.gone.pop(guild_id, None)

    def created(self, guild_id: int, invite: InviteUses) -> None:
        """An invite was created."""
        self.invites.setdefault(guild_id, {})[invite.code] = invite

    def deleted(self, guild_id: int, code: str) -> None:
        """An invite was deleted (or used up): kept aside until the next join is resolved."""
        invite = self.invites.get(guild_id, {}).pop(code, None)
        if invite is not None:
            self.gone.setdefault(guild_id, {})[code] = invite

    def forget_guild(self, guild_id: int) -> None:
        """Drop a guild's cache."""
        self.invites.pop(guild_id, None)
        self.gone.pop(guild_id, None)

    def knows(self, guild_id: int) -> bool:
        """Whether the guild's invites were loaded."""
        return guild_id in self.invites

    def resolve(self, guild_id: int, current: Iterable[InviteUses]) -> int | None:
        """The inviter of the member who just joined, given the guild's invites now.

        Exactly one use is attributed per join: if the only invite that went up went up by
        two (two joins racing through it), the cache keeps one use back for the other join.
        """
        before = self.invites.get(guild_id, {})
        gone = self.gone.pop(guild_id, {})
        now = {i.code: i for i in current}
        grown = [
            i for code, i in now.items() if i.uses > (before[code].uses if code in before else 0)
        ]
        used_up = [
            i
            for code, i in {**gone, **before}.items()
            if code not in now and i.max_uses and i.uses + 1 >= i.max_uses
        ]
        candidates = grown + used_up
        updated = dict(now)
        inviter = None
        if len(candidates) == 1:
            used = candidates[0]
            inviter = used.inviter_id
            if used.code in now and used.code in before:
                old = before[used.code]
                updated[used.code] = InviteUses(
                    used.code, used.inviter_id, old.uses + 1, used.max_uses
                )
        self.invites[guild_id] = updated
        return inviter


def invite_uses(invite: discord.Invite) -> InviteUses:
    """The tracker's view of a discord.py invite (bot inviters are not rewarded)."""
    inviter = invite.inviter
    return InviteUses(
        code=invite.code,
        inviter_id=inviter.id if inviter is not None and not inviter.bot else None,
        uses=invite.uses or 0,
        max_uses=invite.max_uses or 0,
    )


async def fetch_invite_uses(guild: discord.Guild) -> list[InviteUses] | None:
    """The guild's invites now; None when they cannot be read (no Manage Server permission)."""
    try:
        return [invite_uses(i) for i in await guild.invites()]
    except discord.HTTPException as exc:  # Forbidden included
        log.info("cannot read invites of guild %s: %s", guild.id, exc)
        return None


@dataclass
class DiscordInviteTracking:
    """The listeners' side of invite tracking: loads, updates and resolves per guild."""

    tracker: InviteTracker = field(default_factory=InviteTracker)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    async def load_guild(self, guild: discord.Guild) -> None:
        """Cache a guild's invites (at start-up and when the bot joins a guild)."""
        invites = await fetch_invite_uses(guild)
        if invites is not None:
            self.tracker.load(guild.id, invites)

    def invite_created(self, invite: discord.Invite) -> None:
        """An invite was created in a guild."""
        if invite.guild is not None:
            self.tracker.created(invite.guild.id, invite_uses(invite))

    def invite_deleted(self, invite: discord.Invite) -> None:
        """An invite was deleted in a guild."""
        if invite.guild is not None:
            self.tracker.deleted(invite.guild.id, invite.code)

    async def inviter_of_join(self, guild: discord.Guild) -> int | None:
        """Who invited the member who just joined `guild` (None when unknown)."""
        lock = self._locks.setdefault(guild.id, asyncio.Lock())
        async with lock:
            if not self.tracker.knows(guild.id):
                await self.load_guild(guild)  # cold cache: this join cannot be attributed
                return None
            invites = await fetch_invite_uses(guild)
            if invites is None:
                return None
            return self.tracker.resolve(guild.id, invites)
