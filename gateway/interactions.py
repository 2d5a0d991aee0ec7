"""What every command and button shares: who is acting, the command id, replies, the one error
handler, and the in-flight tracking that lets shutdown drain work instead of cutting it off.

Nothing here decides anything about the economy: permissions are read from what Discord resolved
for the interaction and handed to the ledger's rules as an `Actor`, which refuse what it may not do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands
from psycopg_pool import AsyncConnectionPool

from gateway.rate_limit import CommandRateLimit
from ledger import commands as cmd
from ledger.errors import LedgerError, NotPermitted
from ledger.guild_config import GuildConfig
from ledger.runtime import Services

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

GENERIC_ERROR = (
    "Something went wrong on our side. Please try again in a moment; "
    "if it keeps happening, tell a moderator."
)
SHUTTING_DOWN = "The bot is restarting. Please try again in a minute."
NOT_YOURS = "These buttons belong to someone else's command; run the command yourself."


class ShuttingDown(app_commands.CheckFailure):
    """The bot is draining before shutdown and takes no new work."""


class InFlight:
    """The tasks running a command or a button press, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def enter(self) -> None:
        """Track the current task until it ends; refuse new work once closing."""
        if self.closing:
            raise ShuttingDown(SHUTTING_DOWN)
        task = asyncio.current_task()
        if task is not None and task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> int:
        """Stop taking work and wait up to `within` s for what runs; return how many remain."""
        self.closing = True
        pending = self._tasks - {asyncio.current_task()}
        if not pending:
            return 0
        _, still_running = await asyncio.wait(pending, timeout=within)
        return len(still_running)


@dataclass
class CommandDeps:
    """What command cogs are given: the write side and the in-flight tracker."""

    services: Services
    in_flight: InFlight = field(default_factory=InFlight)

    @property
    def pool(self) -> AsyncConnectionPool:
        """The pool the read queries (`projections.queries`, `projections.leaderboard`) use."""
        return self.services.pool

    async def guild_config(self, guild_id: int) -> GuildConfig:
        """The guild's settings in force (the ledger's own config row, not a projection)."""
        loaded = await self.services.store.load(guild_id, [], [])
        return loaded.config


def guild_id_of(interaction: Interaction) -> int:
    """The guild the interaction happened in; commands are guild-only."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage("Use this command in a server.")
    return interaction.guild_id


def command_id_of(interaction: Interaction) -> str:
    """The ledger command id of an interaction: its snowflake, so a retry is idempotent."""
    return str(interaction.id)


def actor_of(interaction: Interaction) -> cmd.Actor:
    """The acting member with the permissions Discord resolved for them in this channel.

    These come from Discord with the interaction, not from the client's command picker, so a
    member whose client skipped the default-permission filter is still not a moderator here.
    """
    permissions = interaction.permissions
    return cmd.Actor(
        interaction.user.id,
        is_moderator=permissions.administrator or permissions.moderate_members,
        is_admin=permissions.administrator or permissions.manage_guild,
    )


def require_moderator(interaction: Interaction) -> None:
    """Moderation records are read by moderators only. (Writes need no such check here: the
    ledger's rules refuse them for an actor without the permission.)"""
    if not actor_of(interaction).is_moderator:
        raise NotPermitted("Only moderators can do that.")


def require_admin(interaction: Interaction) -> None:
    """Settings are read by admins only (writes are refused by the ledger's rules)."""
    if not actor_of(interaction).is_admin:
        raise NotPermitted("Only admins can do that.")


async def send(
    interaction: Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    view: discord.ui.View | None = None,
    file: discord.File | None = None,
    ephemeral: bool = False,
) -> None:
    """Answer the interaction, or follow up when it was already answered or deferred."""
    kwargs: dict[str, Any] = {"ephemeral": ephemeral}
    if content is not None:
        kwargs["content"] = content
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    if file is not None:
        kwargs["file"] = file
    if interaction.response.is_done():
        await interaction.followup.send(**kwargs)
    else:
        await interaction.response.send_message(**kwargs)


def error_message(error: BaseException) -> str | None:
    """The member-facing text for an expected error; None for a bug."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, LedgerError):
        return error.message
    if isinstance(error, app_commands.NoPrivateMessage):
        return "Use this command in a server."
    if isinstance(error, app_commands.MissingPermissions):
        needed = ", ".join(p.replace("_", " ") for p in error.missing_permissions)
        return f"You need the {needed} permission for this."
    if isinstance(error, app_commands.TransformerError):
        return f"{error.value!r} is not a valid value for this option."
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You cannot use this command here."
    return None


async def handle_error(interaction: Interaction, error: BaseException) -> None:
    """The one error handler: expected errors become a short ephemeral reply in the member's
    terms; anything else is logged and answered with a generic ephemeral message."""
    message = error_message(error)
    if message is None:
        original = getattr(error, "original", error)
        log.error(
            "command failed (guild %s, interaction %s)",
            interaction.guild_id,
            interaction.id,
            exc_info=(type(original), original, original.__traceback__),
        )
        message = GENERIC_ERROR
    try:
        await send(interaction, message, ephemeral=True)
    except discord.HTTPException:  # the interaction expired or was deleted: nothing to tell
        log.warning("could not deliver an error reply for interaction %s", interaction.id)


class LedgerTree(app_commands.CommandTree[discord.Client]):
    """The command tree: tracks each command while it runs and routes errors to
    `handle_error`."""

    def __init__(self, client: discord.Client, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.in_flight = InFlight()
        self.rate_limit: CommandRateLimit | None = None  # set by the bot

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        """Every command is tracked until it ends; none start while shutting down, and none
        beyond the member's per-minute limit."""
        if interaction.type is discord.InteractionType.autocomplete:
            return not self.in_flight.closing  # suggestions change nothing: not tracked
        if self.rate_limit is not None and interaction.guild_id is not None:
            wait = await self.rate_limit.wait_for(interaction.guild_id, interaction.user.id)
            if wait > 0:
                await send(
                    interaction,
                    f"You are going a bit fast: try again in {max(1, round(wait))} s.",
                    ephemeral=True,
                )
                return False
        self.in_flight.enter()
        return True

    async def on_error(
        self, interaction: Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        """Turn the error into an ephemeral reply."""
        await handle_error(interaction, error)


class OwnedView(discord.ui.View):
    """Buttons only the member who ran the command may press; presses are tracked in flight
    and their errors go to `handle_error`."""

    def __init__(self, owner_id: int, in_flight: InFlight, timeout: float = 180.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.in_flight = in_flight
        # the interaction whose response carries these buttons (for editing on timeout)
        self.origin: Interaction | None = None

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        """Refuse other members' presses and new work during shutdown."""
        if interaction.user.id != self.owner_id:
            await send(interaction, NOT_YOURS, ephemeral=True)
            return False
        try:
            self.in_flight.enter()
        except ShuttingDown:
            await send(interaction, SHUTTING_DOWN, ephemeral=True)
            return False
        return True

    async def on_error(
        self, interaction: Interaction, error: Exception, item: discord.ui.Item[Any], /
    ) -> None:
        """Turn the error into an ephemeral reply."""
        await handle_error(interaction, error)

    def disable(self) -> None:
        """Grey out every button (after a decision, or when the view times out)."""
        for child in self.children:
            if isinstance(child, discord.ui.Button):
                child.disabled = True

    async def on_timeout(self) -> None:
        """Leave the message with its buttons greyed out."""
        self.disable()
        if self.origin is not None:
            with contextlib.suppress(discord.HTTPException):
                await self.origin.edit_original_response(view=self)
