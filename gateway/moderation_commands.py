"""Moderators' slash commands: warn, warnings, pardon.

They carry `moderate_members` as their default permission (Discord hides them from others) and
are checked again on the server: the acting member's resolved permissions become the command's
`Actor`, and the ledger's rules refuse a non-moderator's warning or pardon whatever the client did.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from gateway.embeds import warnings_embed
from gateway.interactions import (
    CommandDeps,
    Interaction,
    actor_of,
    command_id_of,
    guild_id_of,
    require_moderator,
    send,
)
from ledger import commands as cmd
from ledger.rules.draft import MAX_TEXT
from projections import queries

MODERATORS = discord.Permissions(moderate_members=True)
SHOW_CHOICES = [
    app_commands.Choice(name="Active only", value="active"),
    app_commands.Choice(name="All, with pardoned and expired", value="all"),
]


class ModerationCommands(commands.Cog):
    """Moderators' commands."""

    def __init__(self, deps: CommandDeps) -> None:
        self.deps = deps

    @app_commands.command(name="warn", description="Warn a member (kept in the moderation log)")
    @app_commands.describe(member="Who to warn", reason="Why (the member and moderators see it)")
    @app_commands.default_permissions(moderate_members=True)
    @app_commands.guild_only()
    async def warn(
        self,
        interaction: Interaction,
        member: discord.Member,
        reason: app_commands.Range[str, 1, MAX_TEXT],
    ) -> None:
        """Issue a warning; report the member's active count and any threshold action."""
        outcome = await self.deps.services.batcher.execute(
            cmd.IssueWarning(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=member.id,
                actor=actor_of(interaction),
                reason=reason,
            )
        )
        text = (
            f"Warned {member.mention} (warning `{outcome.ref}`): {reason}\n"
            f"They now have {outcome.value} active warning(s)."
        )
        if "threshold_reached" in outcome.events:
            text += " That reaches the server's threshold: the configured action is applied."
        await send(interaction, text, ephemeral=True)

    @app_commands.command(name="warnings", description="List a member's warnings")
    @app_commands.describe(member="Whose warnings to list", show="Active warnings or all of them")
    @app_commands.choices(show=SHOW_CHOICES)
    @app_commands.default_permissions(moderate_members=True)
    @app_commands.guild_only()
    async def warnings(
        self, interaction: Interaction, member: discord.Member, show: str = "active"
    ) -> None:
        """A member's warnings, newest first, with their ids."""
        require_moderator(interaction)
        records = await queries.warnings(
            self.deps.pool,
            guild_id_of(interaction),
            member.id,
            status="active" if show == "active" else None,
        )
        await send(interaction, embed=warnings_embed(member.id, records), ephemeral=True)

    @app_commands.command(name="pardon", description="Withdraw one of a member's active warnings")
    @app_commands.describe(
        member="Whose warning to withdraw",
        warning="The warning's id (see /warnings)",
        reason="Why it is withdrawn",
    )
    @app_commands.default_permissions(moderate_members=True)
    @app_commands.guild_only()
    async def pardon(
        self,
        interaction: Interaction,
        member: discord.Member,
        warning: app_commands.Range[str, 1, 128],
        reason: app_commands.Range[str, 0, MAX_TEXT] = "",
    ) -> None:
        """Pardon a warning."""
        await self.deps.services.batcher.execute(
            cmd.PardonWarning(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=member.id,
                actor=actor_of(interaction),
                warning_id=warning,
                reason=reason,
            )
        )
        await send(
            interaction, f"Warning `{warning}` of {member.mention} is pardoned.", ephemeral=True
        )

    @pardon.autocomplete("warning")
    async def _active_warnings(
        self, interaction: Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The chosen member's active warnings (moderators only)."""
        member = getattr(interaction.namespace, "member", None)
        if member is None or interaction.guild_id is None or not actor_of(interaction).is_moderator:
            return []
        records = await queries.warnings(
            self.deps.pool, interaction.guild_id, member.id, status="active"
        )
        return [
            app_commands.Choice(name=f"{r.warning_id}: {r.reason}"[:100], value=r.warning_id)
            for r in records
            if current in r.warning_id or current.lower() in r.reason.lower()
        ][:25]
