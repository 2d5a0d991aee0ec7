"""Members' slash commands: level, rank card, balance, pay, daily, inventory, leaderboard, history.

Each callback parses its options, calls the ledger (writes through the group-committing batcher)
or the projections' read API, and renders. Replies to a write come from the command's outcome,
never from a read table that may not have caught up yet.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from discord import app_commands
from discord.ext import commands

from gateway.embeds import history_embed, inventory_embed, leaderboard_embed, level_embed
from gateway.interactions import (
    CommandDeps,
    Interaction,
    command_id_of,
    guild_id_of,
    send,
)
from gateway.rank_card import render_rank_card
from gateway.views import ConfirmView, InventoryView, PagedView, Reply
from ledger import commands as cmd
from ledger.errors import InvalidInput
from ledger.levels import progress
from ledger.rules.items import CATALOGUE
from ledger.service import Outcome
from projections import leaderboard as boards
from projections import queries
from projections.periods import BOARDS, PERIOD_KINDS

MAX_LC_OPTION = 1_000_000_000
LEADERBOARD_PAGE = 10
HISTORY_PAGE = 15
User = discord.Member | discord.User

BOARD_CHOICES = [
    app_commands.Choice(name="XP", value="xp"),
    app_commands.Choice(name="LC earned", value="lc"),
]
PERIOD_CHOICES = [
    app_commands.Choice(name="All time", value="all"),
    app_commands.Choice(name="Today", value="day"),
    app_commands.Choice(name="This week", value="week"),
    app_commands.Choice(name="This month", value="month"),
]


@dataclass(frozen=True)
class Figures:
    """What the level and rank displays show for a member."""

    xp: int
    balance: int
    rank: int | None
    ranked_members: int


def _not_a_bot(member: User) -> None:
    if member.bot:
        raise InvalidInput("Bots take no part in the economy.")


class MemberCommands(commands.Cog):
    """Members' commands."""

    def __init__(self, deps: CommandDeps) -> None:
        self.deps = deps

    async def _join(self, interaction: Interaction) -> Outcome:
        """A member's first interaction opens their wallet with the starting balance."""
        return await self.deps.services.batcher.execute(
            cmd.Join(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=interaction.user.id,
            )
        )

    async def _figures(self, interaction: Interaction, target: User) -> Figures:
        _not_a_bot(target)
        guild_id = guild_id_of(interaction)
        joined = await self._join(interaction) if target.id == interaction.user.id else None
        found = await queries.profile(self.deps.pool, guild_id, target.id)
        wallet = await queries.balance(self.deps.pool, guild_id, target.id)
        xp, balance = (found.xp if found else 0), (wallet.balance if wallet else 0)
        if joined is not None and target.id in joined.members:  # opened just now
            balance, xp = joined.members[target.id].balance, joined.members[target.id].xp
        if found is None:
            return Figures(xp, balance, None, 0)
        return Figures(xp, balance, found.rank, found.ranked_members)

    @app_commands.command(name="level", description="Show your level, XP progress and rank")
    @app_commands.describe(member="The member to show (default: you)")
    @app_commands.guild_only()
    async def level(self, interaction: Interaction, member: discord.Member | None = None) -> None:
        """A member's level, progress bar, rank and balance as an embed."""
        target = member or interaction.user
        figures = await self._figures(interaction, target)
        embed = level_embed(
            target.display_name, figures.xp, figures.balance, figures.rank, figures.ranked_members
        )
        await send(interaction, embed=embed)

    @app_commands.command(name="rank", description="Show your rank card as an image")
    @app_commands.describe(member="The member to show (default: you)")
    @app_commands.guild_only()
    async def rank(self, interaction: Interaction, member: discord.Member | None = None) -> None:
        """A member's rank card (PNG) in the guild's colours."""
        target = member or interaction.user
        figures = await self._figures(interaction, target)
        config = await self.deps.guild_config(guild_id_of(interaction))
        level, into, needed = progress(figures.xp)
        png = await asyncio.to_thread(
            render_rank_card,
            target.display_name,
            level,
            into,
            needed,
            figures.rank,
            config.card_accent,
            config.card_background,
        )
        await send(interaction, file=discord.File(io.BytesIO(png), filename="rank.png"))

    @app_commands.command(name="balance", description="Show your LC balance")
    @app_commands.describe(member="The member to show (default: you)")
    @app_commands.guild_only()
    async def balance(self, interaction: Interaction, member: discord.Member | None = None) -> None:
        """A member's LC balance."""
        target = member or interaction.user
        _not_a_bot(target)
        guild_id = guild_id_of(interaction)
        joined = await self._join(interaction) if target.id == interaction.user.id else None
        if joined is not None and target.id in joined.members:  # opened just now
            amount = joined.members[target.id].balance
        else:
            wallet = await queries.balance(self.deps.pool, guild_id, target.id)
            amount = wallet.balance if wallet else 0
        whose = "You have" if target.id == interaction.user.id else f"{target.mention} has"
        await send(interaction, f"{whose} **{amount:,} LC**.")

    @app_commands.command(name="pay", description="Send LC to another member")
    @app_commands.describe(member="Who receives the LC", amount="How many LC to send")
    @app_commands.guild_only()
    async def pay(
        self,
        interaction: Interaction,
        member: discord.Member,
        amount: app_commands.Range[int, 1, MAX_LC_OPTION],
    ) -> None:
        """Transfer LC; above the guild's threshold, only after the payer confirms."""
        _not_a_bot(member)
        guild_id = guild_id_of(interaction)
        transfer = cmd.Transfer(
            guild_id=guild_id,
            command_id=command_id_of(interaction),
            from_id=interaction.user.id,
            to_id=member.id,
            amount=amount,
        )
        config = await self.deps.guild_config(guild_id)
        if amount <= config.pay_confirm_above:
            outcome = await self.deps.services.batcher.execute(transfer)
            await send(interaction, _receipt(transfer, outcome))
            return
        await self.deps.services.ledger.preview(transfer)  # refuses now if it cannot succeed

        async def confirm(pressed: Interaction) -> Reply:
            outcome = await self.deps.services.batcher.execute(transfer)
            receipt = _receipt(transfer, outcome)
            return Reply(content=receipt, announce=receipt)

        view = ConfirmView(interaction.user.id, self.deps.in_flight, confirm)
        question = (
            f"Send **{amount:,} LC** to {member.mention}? Transfers above "
            f"{config.pay_confirm_above:,} LC need your confirmation."
        )
        await send(interaction, question, view=view, ephemeral=True)
        view.origin = interaction

    @app_commands.command(name="daily", description="Claim your daily LC gift")
    @app_commands.guild_only()
    async def daily(self, interaction: Interaction) -> None:
        """Once per UTC day, more on consecutive days."""
        outcome = await self.deps.services.batcher.execute(
            cmd.ClaimDaily(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=interaction.user.id,
            )
        )
        me = outcome.members.get(interaction.user.id)
        balance = f" Your balance: **{me.balance:,} LC**." if me else ""
        await send(interaction, f"You received your daily **{outcome.value:,} LC**.{balance}")

    @app_commands.command(
        name="inventory", description="Show your items, and open or activate them"
    )
    @app_commands.guild_only()
    async def inventory(self, interaction: Interaction) -> None:
        """Items held, with a button per usable item."""
        await self._join(interaction)
        found = await queries.inventory(
            self.deps.pool, guild_id_of(interaction), interaction.user.id
        )
        counts = {item.item: item.quantity for item in found.items}

        def render(current: Mapping[str, int]) -> discord.Embed:
            return inventory_embed(current, found.multiplier)

        view = InventoryView(
            interaction.user.id, self.deps.in_flight, counts, self._use_item, render
        )
        if view.buttons:
            await send(interaction, embed=render(counts), view=view, ephemeral=True)
            view.origin = interaction
        else:
            view.stop()
            await send(interaction, embed=render(counts), ephemeral=True)

    async def _use_item(self, interaction: Interaction, item: str) -> tuple[str, bool]:
        outcome = await self.deps.services.batcher.execute(
            cmd.UseItem(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction),
                member_id=interaction.user.id,
                item=item,
            )
        )
        consumed = outcome.appended and not outcome.replayed
        me = outcome.members.get(interaction.user.id)
        if CATALOGUE[item].kind == "jackpot":
            balance = f" Your balance: **{me.balance:,} LC**." if me else ""
            return f"You opened a jackpot and won **{outcome.value:,} LC**.{balance}", consumed
        return (
            f"Your **{item}** multiplier is active for your next {outcome.value} games.",
            consumed,
        )

    @app_commands.command(name="leaderboard", description="The top members by XP or LC earned")
    @app_commands.describe(board="Rank by XP or by LC earned", period="Which period to rank")
    @app_commands.choices(board=BOARD_CHOICES, period=PERIOD_CHOICES)
    @app_commands.guild_only()
    async def leaderboard(
        self, interaction: Interaction, board: str = "xp", period: str = "all"
    ) -> None:
        """A leaderboard page with buttons for the next and previous pages."""
        if board not in BOARDS or period not in PERIOD_KINDS:
            raise InvalidInput("Pick a board and a period from the list.")
        guild_id = guild_id_of(interaction)
        pool = self.deps.pool
        first = await boards.leaderboard(pool, guild_id, board, period, limit=LEADERBOARD_PAGE)
        key = first.period  # stays on the same day/week/month while paging

        async def fetch(
            after: tuple[int, int] | None, page_number: int
        ) -> tuple[discord.Embed, tuple[int, int] | None]:
            page = await boards.leaderboard(
                pool, guild_id, board, key, limit=LEADERBOARD_PAGE, after=after
            )
            return leaderboard_embed(page, period, page_number), page.next_after

        embed = leaderboard_embed(first, period, 0)
        if first.next_after is None:
            await send(interaction, embed=embed)
            return
        view = PagedView(interaction.user.id, self.deps.in_flight, fetch, first.next_after)
        await send(interaction, embed=embed, view=view)
        view.origin = interaction

    @app_commands.command(
        name="history", description="Your own statement: every change to your LC, XP and items"
    )
    @app_commands.guild_only()
    async def history(self, interaction: Interaction) -> None:
        """The member's own statement, newest first, paged with buttons (only they see it)."""
        await self._join(interaction)
        guild_id, member_id = guild_id_of(interaction), interaction.user.id
        pool = self.deps.pool

        async def fetch(before: int | None, page_number: int) -> tuple[discord.Embed, int | None]:
            page = await queries.history(
                pool, guild_id, member_id, limit=HISTORY_PAGE, before=before
            )
            return history_embed(page, page_number), page.next_before

        embed, next_before = await fetch(None, 0)
        if next_before is None:
            await send(interaction, embed=embed, ephemeral=True)
            return
        view = PagedView(member_id, self.deps.in_flight, fetch, next_before)
        await send(interaction, embed=embed, view=view, ephemeral=True)
        view.origin = interaction


def _receipt(transfer: cmd.Transfer, outcome: Outcome) -> str:
    """The public line for a transfer, with the payer's balance after it."""
    payer = outcome.members.get(transfer.from_id)
    balance = f" Balance: {payer.balance:,} LC." if payer else ""
    return f"<@{transfer.from_id}> sent **{transfer.amount:,} LC** to <@{transfer.to_id}>.{balance}"
