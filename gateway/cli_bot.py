"""`ledger bot`: run the Discord bot over the ledger.

Reads `DISCORD_TOKEN` (required) and `DISCORD_GUILD_ID` (optional: sync commands to that guild
only, which is instant). A missing token or a token Discord rejects is one clear line and a
non-zero exit, never a traceback. SIGINT/SIGTERM shut down gracefully: the bot drains its
in-flight commands, then the batcher flushes what is queued and the pool closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys

import discord

from gateway.bot import BotConfigError, BotSettings, LedgerBot
from gateway.cli_commands import app_services
from gateway.cli_projections import start_health
from ledger.database import Settings
from projections import run_workers

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2

EXTRA = {
    "bot": "run the Discord bot (DISCORD_TOKEN; DISCORD_GUILD_ID syncs to one test server)",
}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Declare the options of `ledger bot`."""
    if name == "bot":
        parser.add_argument(
            "--no-sync",
            action="store_true",
            help="do not sync slash commands at start-up (they are unchanged since the last run)",
        )
        parser.add_argument(
            "--projectors",
            action="store_true",
            help="also run the projection workers in this process (small deployments)",
        )
        parser.add_argument(
            "--health-port",
            type=int,
            default=0,
            help="serve /healthz and /metrics on 127.0.0.1:PORT (default: off)",
        )


def _stop_on_signals(bot: LedgerBot) -> None:
    """SIGINT and SIGTERM close the bot (which drains) instead of killing the process."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))


async def run_bot(args: argparse.Namespace, settings: Settings) -> int:
    """Start the services, then the bot until it is closed; return the exit code."""
    try:
        bot_settings = BotSettings.from_env(os.environ)
    except BotConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.no_sync:
        bot_settings = dataclasses.replace(bot_settings, sync_commands=False)
    async with app_services(settings, spool_dir=settings.data_dir / "spool") as services:
        health = await start_health(services, args.health_port)
        stop_projectors = asyncio.Event()
        projectors = (
            asyncio.create_task(run_workers(services.pool, stop=stop_projectors), name="projectors")
            if args.projectors
            else None
        )
        try:
            bot = LedgerBot(services, bot_settings)
            async with bot:
                _stop_on_signals(bot)
                await bot.start(bot_settings.token)
        except discord.LoginFailure:
            print(
                "error: Discord rejected DISCORD_TOKEN; copy the token again from the developer "
                "portal (Bot tab, Reset Token).",
                file=sys.stderr,
            )
            return EXIT_REJECTED
        except discord.PrivilegedIntentsRequired:
            print(
                "error: the bot needs the Server Members intent; enable it in the developer "
                "portal (Bot tab, Privileged Gateway Intents).",
                file=sys.stderr,
            )
            return EXIT_REJECTED
        finally:
            if health is not None:
                await health.stop()
            if projectors is not None:
                stop_projectors.set()
                for result in await asyncio.gather(projectors, return_exceptions=True):
                    if isinstance(result, Exception):
                        log.error("the projection workers stopped with an error", exc_info=result)
    return EXIT_OK


HANDLERS = {"bot": run_bot}
