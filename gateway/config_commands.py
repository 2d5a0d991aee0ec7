"""Admins' `/config` commands: one `ChangeConfig` per change, validated by the ledger.

XP rates, cooldown, multipliers, no-XP channels and roles, starting balance, daily amount,
level-role rewards and their mode, the announcement channel and the rank card's colours. The
ledger checks the value (`validate_setting`) and that the actor is an admin; these callbacks only
turn Discord options into the setting's value.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from gateway.embeds import config_embed
from gateway.interactions import (
    CommandDeps,
    Interaction,
    actor_of,
    command_id_of,
    guild_id_of,
    require_admin,
    send,
)
from ledger import commands as cmd
from ledger.errors import InvalidInput
from ledger.guild_config import GuildConfig
from ledger.levels import MAX_LEVEL

NUMBER_SETTINGS = {
    "message_xp_min": "Message XP, minimum",
    "message_xp_max": "Message XP, maximum",
    "message_cooldown_seconds": "Message XP cooldown (seconds)",
    "guild_multiplier_pct": "Server XP multiplier (%)",
    "voice_xp_per_tick": "Voice XP per tick",
    "voice_hourly_bonus_xp": "Voice XP hourly bonus",
    "reaction_xp": "XP per reaction received",
    "reaction_cap_per_message": "Reactions counted per message",
    "game_xp_win": "XP for a game won",
    "game_xp_loss": "XP for a game lost",
    "multiplier_games": "Games a multiplier item lasts",
    "starting_balance": "Starting balance (LC)",
    "daily_amount": "Daily gift (LC)",
    "daily_streak_bonus": "Daily streak bonus (LC per day)",
    "daily_streak_cap": "Daily streak bonus cap (days)",
    "invite_reward_inviter": "Invite reward, inviter (LC)",
    "invite_reward_invitee": "Invite reward, new member (LC)",
    "pay_confirm_above": "Confirm /pay above (LC)",
    "warning_expiry_days": "Warning expiry (days)",
    "warning_threshold": "Warnings before the action",
    "warning_timeout_minutes": "Timeout length (minutes)",
}
SETTING_CHOICES = [
    app_commands.Choice(name=label, value=key) for key, label in NUMBER_SETTINGS.items()
]
MODE_CHOICES = [
    app_commands.Choice(name="Stack: keep every reward role", value="stack"),
    app_commands.Choice(name="Replace: only the highest reward role", value="replace"),
]
MAX_SETTING = 10**15
XpChannel = discord.TextChannel | discord.VoiceChannel | discord.StageChannel | discord.ForumChannel


def parse_colour(text: str) -> int:
    """`#5865F2` or `5865f2` as 0xRRGGBB."""
    digits = text.strip().removeprefix("#")
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise InvalidInput(f"{text!r} is not a colour; write it like `#5865F2`.")
    return int(digits, 16)


def _entry(key: int, value: int | None) -> tuple[str, object]:
    """The `ChangeConfig` op and value that set (or, with None, remove) one mapping entry."""
    return ("remove", [key]) if value is None else ("add", {key: value})


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class ConfigCommands(commands.GroupCog, group_name="config", group_description="Economy settings"):
    """Admins' settings commands."""

    def __init__(self, deps: CommandDeps) -> None:
        super().__init__()
        self.deps = deps

    async def _config(self, interaction: Interaction) -> GuildConfig:
        return await self.deps.guild_config(guild_id_of(interaction))

    async def _change(
        self, interaction: Interaction, key: str, value: Any, suffix: str = "", op: str = "set"
    ) -> None:
        # add/remove edit the value in force when the ledger decides, so two admins changing
        # the same list at once both keep their change
        await self.deps.services.batcher.execute(
            cmd.ChangeConfig(
                guild_id=guild_id_of(interaction),
                command_id=command_id_of(interaction) + suffix,
                actor=actor_of(interaction),
                key=key,
                value=value,
                op=op,
            )
        )

    @app_commands.command(name="show", description="Show the settings in force")
    async def show(self, interaction: Interaction) -> None:
        """The settings these commands change."""
        require_admin(interaction)
        await send(interaction, embed=config_embed(await self._config(interaction)), ephemeral=True)

    @app_commands.command(name="set", description="Set a number: XP rates, cooldown, LC amounts")
    @app_commands.describe(setting="Which setting", value="Its new value")
    @app_commands.choices(setting=SETTING_CHOICES)
    async def set(
        self, interaction: Interaction, setting: str, value: app_commands.Range[int, 0, MAX_SETTING]
    ) -> None:
        """Change one numeric setting."""
        await self._change(interaction, setting, value)
        label = NUMBER_SETTINGS.get(setting, setting)
        await send(interaction, f"**{label}** is now {value:,}.", ephemeral=True)

    @app_commands.command(name="no-xp-channel", description="Turn XP off or back on in a channel")
    @app_commands.describe(channel="The channel", enabled="True: no XP there; False: XP again")
    async def no_xp_channel(
        self, interaction: Interaction, channel: XpChannel, enabled: bool = True
    ) -> None:
        """Add a channel to, or remove it from, the no-XP channels."""
        op = "add" if enabled else "remove"
        await self._change(interaction, "no_xp_channels", [channel.id], op=op)
        state = "earns no XP" if enabled else "earns XP again"
        await send(interaction, f"{channel.mention} {state}.", ephemeral=True)

    @app_commands.command(name="no-xp-role", description="Turn XP off or back on for a role")
    @app_commands.describe(role="The role", enabled="True: no XP for it; False: XP again")
    async def no_xp_role(
        self, interaction: Interaction, role: discord.Role, enabled: bool = True
    ) -> None:
        """Add a role to, or remove it from, the no-XP roles."""
        op = "add" if enabled else "remove"
        await self._change(interaction, "no_xp_roles", [role.id], op=op)
        state = "earn no XP" if enabled else "earn XP again"
        await send(interaction, f"Members with {role.mention} {state}.", ephemeral=True)

    @app_commands.command(name="role-multiplier", description="Set a role's XP multiplier")
    @app_commands.describe(
        role="The role", percent="Multiplier in percent (150 = x1.5; 100 removes it)"
    )
    async def role_multiplier(
        self,
        interaction: Interaction,
        role: discord.Role,
        percent: app_commands.Range[int, 0, 10_000],
    ) -> None:
        """Set or remove (100%) a role's XP multiplier."""
        op, value = _entry(role.id, None if percent == 100 else percent)
        await self._change(interaction, "role_multipliers_pct", value, op=op)
        await send(interaction, f"{role.mention} earns {percent}% XP.", ephemeral=True)

    @app_commands.command(name="channel-multiplier", description="Set a channel's XP multiplier")
    @app_commands.describe(
        channel="The channel", percent="Multiplier in percent (150 = x1.5; 100 removes it)"
    )
    async def channel_multiplier(
        self,
        interaction: Interaction,
        channel: XpChannel,
        percent: app_commands.Range[int, 0, 10_000],
    ) -> None:
        """Set or remove (100%) a channel's XP multiplier."""
        op, value = _entry(channel.id, None if percent == 100 else percent)
        await self._change(interaction, "channel_multipliers_pct", value, op=op)
        await send(interaction, f"{channel.mention} gives {percent}% XP.", ephemeral=True)

    @app_commands.command(name="level-role", description="Reward a level with a role")
    @app_commands.describe(
        level="The level", role="The role it gives (leave empty to remove the reward)"
    )
    async def level_role(
        self,
        interaction: Interaction,
        level: app_commands.Range[int, 1, MAX_LEVEL],
        role: discord.Role | None = None,
    ) -> None:
        """Set or remove the role rewarded at a level."""
        op, value = _entry(level, role.id if role else None)
        await self._change(interaction, "level_roles", value, op=op)
        text = f"Level {level} gives {role.mention}." if role else f"Level {level} gives no role."
        await send(interaction, text, ephemeral=True)

    @app_commands.command(
        name="level-roles-mode", description="Keep every reward role, or only the highest"
    )
    @app_commands.describe(mode="Stack or replace")
    @app_commands.choices(mode=MODE_CHOICES)
    async def level_roles_mode(self, interaction: Interaction, mode: str) -> None:
        """Whether level-role rewards stack or replace each other."""
        await self._change(interaction, "level_roles_mode", mode)
        await send(interaction, f"Level roles now **{mode}**.", ephemeral=True)

    @app_commands.command(name="announcements", description="Where level-ups are announced")
    @app_commands.describe(channel="The channel (leave empty: where the member spoke)")
    async def announcements(
        self, interaction: Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        """Set the level-up announcement channel."""
        await self._change(interaction, "announcement_channel", channel.id if channel else 0)
        where = channel.mention if channel else "the channel where the member spoke"
        await send(interaction, f"Level-ups are announced in {where}.", ephemeral=True)

    @app_commands.command(name="card-colours", description="The rank card's colours")
    @app_commands.describe(
        accent="Accent colour, e.g. #5865F2", background="Background, e.g. #2B2D31"
    )
    async def card_colours(
        self,
        interaction: Interaction,
        accent: app_commands.Range[str, 6, 7] | None = None,
        background: app_commands.Range[str, 6, 7] | None = None,
    ) -> None:
        """Set the accent and/or background colour of rank cards."""
        changes = [
            (key, parse_colour(text))
            for key, text in (("card_accent", accent), ("card_background", background))
            if text is not None
        ]
        if not changes:
            raise InvalidInput("Give an accent colour, a background colour, or both.")
        for key, colour in changes:
            await self._change(interaction, key, colour, suffix=f":{key}")
        shown = ", ".join(f"{key.removeprefix('card_')} #{colour:06X}" for key, colour in changes)
        await send(interaction, f"Rank cards now use {shown}.", ephemeral=True)
