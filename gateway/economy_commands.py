"""Admins' `/economy` commands: grant and take LC or XP, give items, revert events.

The group's default permission is `manage_guild`; on the server the acting member's resolved
permissions become the command's `Actor`, and the ledger's rules refuse a non-admin. A revert is
previewed first (`Ledger.preview`) and only appended when the admin confirms with a button.
"""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from gateway.embeds import figures_lines, revert_preview_embed
from gateway.interactions import (
    CommandDeps,
    Interaction,
    actor_of,
    command_id_of,
    guild_id_of,
    send,
)
from gateway.member_commands import MAX_LC_OPTION
from gateway.views import ConfirmView, Reply
from ledger import commands as cmd
from ledger.errors import InvalidInput
from ledger.rules.admin import MAX_REVERT
from ledger.rules.draft import MAX_TEXT
from ledger.rules.items import CATALOGUE, MAX_ITEM_GRANT
from ledger.service import Outcome

MAX_XP_OPTION = 10_000_000
ITEM_CHOICES = [app_commands.Choice(name=item, value=item) for item in CATALOGUE]


def parse_positions(text: str) -> tuple[int, ...]:
    """Event positions from `12, 15, 20-25` (as listed by /history and `ledger audit`)."""
    positions: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 1 or last < first or last - first >= MAX_REVERT:
                raise ValueError(part)
            positions.update(range(first, last + 1))
            if len(positions) > MAX_REVERT:
                raise InvalidInput(f"Revert at most {MAX_REVERT} events at once.")
    except ValueError:
        raise InvalidInput(
            "Give event positions as whole numbers separated by commas, e.g. `12, 15, 20-25`."
        ) from None
    if not positions:
        raise InvalidInput("Name at least one event position to revert, e.g. `12` or `20-25`.")
    return tuple(sorted(positions))


def _level_ups(outcome: Outcome) -> str:
    return "".join(
        f"\n<@{member}> is now level {new}."
        for member, old, new in outcome.level_changes
        if new > old
    )


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class EconomyCommands(
    commands.GroupCog, group_name="economy", group_description="Manage the server's economy"
):
    """Admins' economy commands."""

    def __init__(self, deps: CommandDeps) -> None:
        super().__init__()
        self.deps = deps

    @app_commands.command(name="grant", description="Give a member LC and/or XP")
    @app_commands.describe(
        member="Who receives it", lc="LC to give", xp="XP to give", reason="Why (kept in the log)"
    )
    async def grant(
        self,
        interaction: Interaction,
        member: discord.Member,
        lc: app_commands.Range[int, 0, MAX_LC_OPTION] = 0,
        xp: app_commands.Range[int, 0, MAX_XP_OPTION] = 0,
        reason: app_commands.Range[str, 0, MAX_TEXT] = "",
    ) -> None:
        """Mint LC and/or grant XP within the guild's admin bounds."""
        outcome = await self.deps.services.batcher.execute(
            cmd.AdminGrant(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=member.id,
                actor=actor_of(interaction),
                lc=lc,
                xp=xp,
                reason=reason,
            )
        )
        given = " and ".join(
            p for p in (f"{lc:,} LC" if lc else "", f"{xp:,} XP" if xp else "") if p
        )
        text = f"Granted {given} to {member.mention}.\n" + "\n".join(figures_lines(outcome))
        await send(interaction, text + _level_ups(outcome), ephemeral=True)

    @app_commands.command(name="take", description="Take LC from a member")
    @app_commands.describe(member="Who loses it", lc="LC to take", reason="Why (kept in the log)")
    async def take(
        self,
        interaction: Interaction,
        member: discord.Member,
        lc: app_commands.Range[int, 1, MAX_LC_OPTION],
        reason: app_commands.Range[str, 0, MAX_TEXT] = "",
    ) -> None:
        """Burn LC from a member (never below zero)."""
        outcome = await self.deps.services.batcher.execute(
            cmd.AdminTake(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=member.id,
                actor=actor_of(interaction),
                lc=lc,
                reason=reason,
            )
        )
        text = f"Took {lc:,} LC from {member.mention}.\n" + "\n".join(figures_lines(outcome))
        await send(interaction, text, ephemeral=True)

    @app_commands.command(name="item", description="Give a member items")
    @app_commands.describe(member="Who receives them", item="Which item", quantity="How many")
    @app_commands.choices(item=ITEM_CHOICES)
    async def item(
        self,
        interaction: Interaction,
        member: discord.Member,
        item: str,
        quantity: app_commands.Range[int, 1, MAX_ITEM_GRANT] = 1,
    ) -> None:
        """Add items to a member's inventory."""
        await self.deps.services.batcher.execute(
            cmd.GrantItem(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=member.id,
                actor=actor_of(interaction),
                item=item,
                quantity=quantity,
                item_source="admin",
            )
        )
        await send(interaction, f"Gave {quantity} x {item} to {member.mention}.", ephemeral=True)

    @app_commands.command(
        name="revert", description="Undo events by their positions, after a preview"
    )
    @app_commands.describe(
        positions="Event positions, e.g. 12, 15, 20-25 (see /history)",
        reason="Why (kept in the log)",
    )
    async def revert(
        self,
        interaction: Interaction,
        positions: app_commands.Range[str, 1, 1000],
        reason: app_commands.Range[str, 0, MAX_TEXT] = "",
    ) -> None:
        """Preview the compensating events; append them only when the admin confirms."""
        command = cmd.Revert(
            guild_id=guild_id_of(interaction),
            command_id=command_id_of(interaction),
            actor=actor_of(interaction),
            positions=parse_positions(positions),
            reason=reason,
        )
        ledger = self.deps.services.ledger
        preview = await ledger.preview(command)  # refuses non-admins and unknown positions
        embed = revert_preview_embed(command.positions, preview)
        if not preview.events:
            await send(interaction, embed=embed, ephemeral=True)
            return

        async def confirm(pressed: Interaction) -> Reply:
            outcome = await ledger.execute(command)  # same id: a second press changes nothing
            done = f"Reverted: {len(outcome.events)} compensating event(s) appended.\n" + "\n".join(
                figures_lines(outcome)
            )
            return Reply(content=done, embed=None)

        view = ConfirmView(interaction.user.id, self.deps.in_flight, confirm)
        await send(interaction, embed=embed, view=view, ephemeral=True)
        view.origin = interaction
