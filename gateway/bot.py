"""The Discord bot: a `commands.Bot` given its dependencies, set up in `setup_hook`.

Nothing is wired at import time. `ledger bot` (gateway/cli_bot.py) opens the services, builds a
`LedgerBot` with them and the `BotSettings` it read from the environment, and starts it. Shutdown
drains: new interactions are refused, running commands and button presses get up to
`drain_timeout` seconds to finish and reply, the background parts stop, the Discord connection
closes; then the caller leaves `open_services`, which lets the batcher flush what is queued and
closes the pool.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import discord
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from discord.ext import commands

from gateway.config_commands import ConfigCommands
from gateway.discord_effects import DiscordSideEffectSender
from gateway.economy_commands import EconomyCommands
from gateway.interactions import CommandDeps, LedgerTree
from gateway.listeners import ListenersCog
from gateway.locale import FrenchTranslator
from gateway.member_commands import MemberCommands
from gateway.moderation_commands import ModerationCommands
from gateway.outbox import run_outbox
from gateway.rate_limit import CommandRateLimit
from gateway.scheduler import build_scheduler
from ledger.runtime import Services

log = logging.getLogger(__name__)


class BotConfigError(Exception):
    """The environment does not describe a runnable bot (missing token, bad guild id)."""


@dataclass(frozen=True)
class BotSettings:
    """How the bot runs: its token, where commands are synced, how long shutdown may drain."""

    token: str
    dev_guild_id: int | None = None  # sync commands to this guild only (instant; for testing)
    sync_commands: bool = True
    drain_timeout: float = 10.0

    def __repr__(self) -> str:  # never print the token
        return f"BotSettings(dev_guild_id={self.dev_guild_id}, sync_commands={self.sync_commands})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BotSettings:
        """`DISCORD_TOKEN` (required) and `DISCORD_GUILD_ID` (optional development guild)."""
        token = environ.get("DISCORD_TOKEN", "").strip()
        if not token:
            raise BotConfigError(
                "DISCORD_TOKEN is not set: put the bot's token (Discord developer portal, "
                "Bot tab) in the environment."
            )
        guild = environ.get("DISCORD_GUILD_ID", "").strip()
        if guild and not (guild.isdigit() and 0 < int(guild) < 2**63):
            raise BotConfigError(f"DISCORD_GUILD_ID must be a server id (digits), not {guild!r}.")
        return cls(token=token, dev_guild_id=int(guild) if guild else None)


def bot_intents() -> discord.Intents:
    """What the gateway needs: guilds, members (joins, roles), guild messages (XP; the content
    is never read, so no message-content intent), voice states, reactions, invites."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.members = True
    intents.guild_messages = True
    intents.voice_states = True
    intents.guild_reactions = True
    intents.invites = True
    return intents


class LedgerBot(commands.Bot):
    """The economy bot: slash commands over the ledger, plus listeners and background jobs."""

    def __init__(self, services: Services, settings: BotSettings) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=bot_intents(),
            tree_cls=LedgerTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
        )
        self.services = services
        self.settings = settings
        tree = self.tree
        assert isinstance(tree, LedgerTree)
        self.deps = CommandDeps(services, tree.in_flight)
        tree.rate_limit = CommandRateLimit(self.deps.guild_config)
        self._draining = False
        self.scheduler: AsyncIOScheduler | None = None
        self._outbox_stop = asyncio.Event()
        self._outbox: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        """Add the commands and background parts, then sync the commands."""
        await self.tree.set_translator(FrenchTranslator())
        for cog in command_cogs(self.deps):
            await self.add_cog(cog)
        await self.add_side_parts()
        if self.settings.sync_commands:
            await self.sync_commands()

    async def add_side_parts(self) -> None:
        """The listeners (XP, joins, invites), the scheduler (voice ticks, warning expiry) and
        the outbox (level-up announcements, role rewards, timeouts), stopped in `close`."""
        listeners = ListenersCog(self, self.services)
        await self.add_cog(listeners)
        self.scheduler = build_scheduler(
            self.services, listeners.voice, lambda: [guild.id for guild in self.guilds]
        )
        self.scheduler.start()
        self._outbox = asyncio.create_task(
            run_outbox(self.services, DiscordSideEffectSender(self), stop=self._outbox_stop),
            name="outbox",
        )

    async def sync_commands(self) -> None:
        """Sync to the development guild when set (instant), else globally (up to an hour)."""
        if self.settings.dev_guild_id is not None:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d commands globally", len(synced))

    async def on_ready(self) -> None:
        """Log who we are once connected."""
        log.info("connected as %s to %d guilds", self.user, len(self.guilds))

    async def close(self) -> None:
        """Drain in-flight commands, stop the background parts, then disconnect."""
        if not self._draining:
            self._draining = True
            remaining = await self.deps.in_flight.drain(self.settings.drain_timeout)
            if remaining:
                log.warning("%d commands still running at shutdown", remaining)
            await self.stop_side_parts()
        await super().close()

    async def stop_side_parts(self) -> None:
        """Stop what `add_side_parts` started (the listeners cog is removed with the cogs).

        Undelivered outbox rows stay in the table for the next start (at-least-once)."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._outbox is not None:
            self._outbox_stop.set()
            done, _ = await asyncio.wait({self._outbox}, timeout=self.settings.drain_timeout)
            if not done:  # a delivery stuck on Discord: its lease lapses, it is retried later
                self._outbox.cancel()
            for result in await asyncio.gather(self._outbox, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("the outbox stopped with an error", exc_info=result)


def command_cogs(deps: CommandDeps) -> list[commands.Cog]:
    """The slash-command cogs, one per feature."""
    return [
        MemberCommands(deps),
        ModerationCommands(deps),
        EconomyCommands(deps),
        ConfigCommands(deps),
    ]
