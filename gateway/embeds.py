"""Embeds and reply text: how figures, pages and warnings look in Discord. Pure functions.

Members are shown as mentions (`<@id>`), which Discord renders as names without storing any:
the log and read tables hold ids only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import discord

from ledger.audit import describe
from ledger.guild_config import GuildConfig
from ledger.levels import progress
from ledger.rules.items import CATALOGUE
from ledger.service import MemberSummary, Outcome
from projections.leaderboard import LeaderboardPage
from projections.queries import HistoryPage, Multiplier, WarningRecord

COLOUR = discord.Colour(0x5865F2)
WARNING_COLOUR = discord.Colour(0xED4245)
BAR_WIDTH = 16
BOARD_UNITS = {"xp": "XP", "lc": "LC earned"}
PERIOD_LABELS = {"all": "all time", "day": "today", "week": "this week", "month": "this month"}


def progress_bar(xp_into_level: int, xp_needed: int, width: int = BAR_WIDTH) -> str:
    """A text bar such as `▰▰▰▰▱▱▱▱ 50%` (full at the top level)."""
    fraction = 1.0 if xp_needed <= 0 else min(max(xp_into_level, 0), xp_needed) / xp_needed
    filled = round(width * fraction)
    return "▰" * filled + "▱" * (width - filled) + f" {int(fraction * 100)}%"


def rank_text(rank: int | None, members: int) -> str:
    """`#3 of 120`, or `unranked`."""
    return f"#{rank:,} of {members:,}" if rank else "unranked"


def level_embed(
    name: str, xp: int, balance: int, rank: int | None, ranked_members: int
) -> discord.Embed:
    """A member's level card as an embed: level, progress bar, XP, rank, balance."""
    level, into, needed = progress(xp)
    embed = discord.Embed(title=name, colour=COLOUR)
    embed.add_field(name="Level", value=f"{level:,}")
    embed.add_field(name="Rank", value=rank_text(rank, ranked_members))
    embed.add_field(name="Balance", value=f"{balance:,} LC")
    to_go = f"{into:,} / {needed:,} XP" if needed else "maximum level"
    embed.add_field(
        name=f"Progress to level {level + 1:,}" if needed else "Progress",
        value=f"`{progress_bar(into, needed)}`\n{to_go} · {xp:,} XP in all",
        inline=False,
    )
    return embed


def leaderboard_embed(page: LeaderboardPage, period_kind: str, page_number: int) -> discord.Embed:
    """One page of a leaderboard: rank, member, score."""
    unit = BOARD_UNITS.get(page.board, page.board)
    period = PERIOD_LABELS.get(period_kind, page.period)
    title = f"Leaderboard: {unit}, {period}"
    if not page.entries:
        return discord.Embed(title=title, description="Nobody on this board yet.", colour=COLOUR)
    lines = [f"**#{e.rank:,}** <@{e.member_id}> · {e.score:,} {unit}" for e in page.entries]
    embed = discord.Embed(title=title, description="\n".join(lines), colour=COLOUR)
    embed.set_footer(text=f"Page {page_number + 1} · {page.members:,} members ranked")
    return embed


def _signed(value: int, unit: str) -> str:
    return f"{value:+,} {unit}" if value else ""


def history_embed(page: HistoryPage, page_number: int) -> discord.Embed:
    """A page of a member's statement, newest first, with event positions (for reverts)."""
    if not page.entries:
        return discord.Embed(title="Your history", description="Nothing yet.", colour=COLOUR)
    lines = []
    for entry in page.entries:
        deltas = " ".join(
            part for part in (_signed(entry.lc_delta, "LC"), _signed(entry.xp_delta, "XP")) if part
        )
        when = discord.utils.format_dt(entry.recorded_at, "d")
        lines.append(
            f"`#{entry.position}` {when} {describe(entry.event)}"
            + (f" **{deltas}**" if deltas else "")
        )
    embed = discord.Embed(title="Your history", description="\n".join(lines)[:4000], colour=COLOUR)
    embed.set_footer(text=f"Page {page_number + 1} · newest first")
    return embed


def inventory_embed(counts: Mapping[str, int], multiplier: Multiplier | None) -> discord.Embed:
    """Items held and the multiplier in force."""
    held = [(item, n) for item, n in sorted(counts.items()) if n > 0]
    lines = []
    for item, count in held:
        kind = CATALOGUE[item].kind if item in CATALOGUE else "item"
        lines.append(f"**{item}** x {count:,} ({kind})")
    embed = discord.Embed(
        title="Your inventory", description="\n".join(lines) or "Your bag is empty.", colour=COLOUR
    )
    if multiplier is not None:
        embed.add_field(
            name="Active multiplier",
            value=f"{multiplier.item}: x{multiplier.factor_pct / 100:g} for "
            f"{multiplier.games_left} more game(s)",
        )
    return embed


def warnings_embed(member_id: int, records: Sequence[WarningRecord]) -> discord.Embed:
    """A member's warnings, newest first, with their ids (for pardons)."""
    active = sum(1 for w in records if w.status == "active")
    embed = discord.Embed(
        title="Warnings",
        description=f"<@{member_id}>: {active} active, {len(records)} listed",
        colour=WARNING_COLOUR,
    )
    for record in records[:20]:
        issued = discord.utils.format_dt(record.issued_at, "d")
        if record.status == "active":
            state = f"active until {discord.utils.format_dt(record.expires_at, 'd')}"
        else:
            state = record.status
        embed.add_field(
            name=f"{record.warning_id} · {state}",
            value=f"{record.reason[:900]}\nby <@{record.moderator_id}> on {issued}",
            inline=False,
        )
    return embed


def _summary(member_id: int, figures: MemberSummary) -> str:
    return f"<@{member_id}>: {figures.balance:,} LC, {figures.xp:,} XP (level {figures.level:,})"


def figures_lines(outcome: Outcome) -> list[str]:
    """Each touched member's figures after a command (read-your-writes)."""
    return [_summary(member, figures) for member, figures in sorted(outcome.members.items())]


def revert_preview_embed(positions: Sequence[int], preview: Outcome) -> discord.Embed:
    """What a revert would do: how many compensating events, members' figures after it."""
    if not preview.events:
        description = "Those events are already reverted; nothing would change."
    else:
        description = (
            f"Reverting {len(positions)} event(s) appends {len(preview.events)} compensating "
            "event(s). Figures after the revert:\n" + "\n".join(figures_lines(preview))
        )
    return discord.Embed(title="Revert preview", description=description, colour=WARNING_COLOUR)


def _ids(values: Iterable[int], prefix: str) -> str:
    return ", ".join(f"<{prefix}{v}>" for v in sorted(values)) or "none"


def config_embed(config: GuildConfig) -> discord.Embed:
    """The settings the config commands change, as they are in force."""
    embed = discord.Embed(title="Economy settings", colour=COLOUR)
    embed.add_field(
        name="XP",
        value=(
            f"message {config.message_xp_min}-{config.message_xp_max} XP, cooldown "
            f"{config.message_cooldown_seconds}s\nvoice {config.voice_xp_per_tick} XP per "
            f"{config.voice_tick_seconds}s, hourly bonus {config.voice_hourly_bonus_xp}\n"
            f"reactions {config.reaction_xp} XP (cap {config.reaction_cap_per_message}/message)"
        ),
        inline=False,
    )
    multipliers = [f"guild {config.guild_multiplier_pct}%"]
    multipliers += [f"<@&{r}> {p}%" for r, p in sorted(config.role_multipliers_pct.items())]
    multipliers += [f"<#{c}> {p}%" for c, p in sorted(config.channel_multipliers_pct.items())]
    embed.add_field(name="Multipliers", value=", ".join(multipliers), inline=False)
    embed.add_field(
        name="No XP",
        value=f"channels: {_ids(config.no_xp_channels, '#')}\n"
        f"roles: {_ids(config.no_xp_roles, '@&')}",
        inline=False,
    )
    embed.add_field(
        name="LC",
        value=f"starting balance {config.starting_balance}, daily {config.daily_amount} "
        f"(+{config.daily_streak_bonus}/day of streak), /pay asks above "
        f"{config.pay_confirm_above}",
        inline=False,
    )
    rewards = ", ".join(f"level {lv} → <@&{r}>" for lv, r in sorted(config.level_roles.items()))
    channel = (
        f"<#{config.announcement_channel}>" if config.announcement_channel else "where they spoke"
    )
    embed.add_field(
        name="Level roles",
        value=f"{rewards or 'none'} ({config.level_roles_mode})\nannouncements: {channel}",
        inline=False,
    )
    embed.add_field(
        name="Rank card",
        value=f"accent #{config.card_accent:06X}, background #{config.card_background:06X}",
        inline=False,
    )
    return embed
