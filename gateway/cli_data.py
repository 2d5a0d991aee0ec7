"""Data subcommands: `import mee6`, `export` (JSON Lines + digest), `forget` (personal data)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from gateway.cli_audit import discord_id, file_path, positive_int
from gateway.cli_commands import app_services
from gateway.progress import Progress
from ledger import commands as cmd
from ledger.database import Settings
from ledger.errors import InvalidInput, LedgerError
from ledger.export import export_lines
from ledger.mee6 import LEADERBOARD_URL, fetch_pages, import_commands, parse_pages
from ledger.profiles import forget as forget_profile
from ledger.profiles import remember_names


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Declare the options of a data subcommand."""
    if name == "import":
        parser.add_argument("source", choices=["mee6"], help="where the data comes from")
        parser.add_argument("guild", type=positive_int, help="guild id to import into")
        parser.add_argument("files", nargs="*", type=file_path, help="saved leaderboard JSON pages")
        parser.add_argument(
            "--fetch", action="store_true", help="fetch the guild's public leaderboard (online)"
        )
        parser.add_argument("--url", default=LEADERBOARD_URL, help="page URL template")
        parser.add_argument("--by", type=discord_id, default=0, help="operator's Discord id")
    elif name == "export":
        parser.add_argument("guild", type=positive_int, help="guild id")
        parser.add_argument("--member", type=positive_int, help="only this member's events")
        parser.add_argument(
            "--output", "-o", type=file_path, help="file (default: standard output)"
        )
    elif name == "forget":
        parser.add_argument("member", type=positive_int, help="member id")
        parser.add_argument("--guild", type=positive_int, help="only in this guild")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def import_data(args: argparse.Namespace, settings: Settings) -> int:
    """Import a MEE6 leaderboard; the same data twice changes nothing."""
    from gateway.cli import print_json

    if args.fetch == bool(args.files):
        raise InvalidInput("Give saved page files, or --fetch (not both).")
    if args.fetch:
        pages = await fetch_pages(args.guild, args.url)
    else:
        pages = [await asyncio.to_thread(path.read_bytes) for path in args.files]
    board = parse_pages(pages)
    actor = cmd.Actor(args.by, is_moderator=True, is_admin=True)
    commands = import_commands(args.guild, board, actor, datetime.now(UTC))
    imported = skipped = 0
    async with app_services(settings) as services:
        await remember_names(
            services.pool,
            args.guild,
            [(m, p.username) for m, p in board.players.items() if p.username],
        )
        with Progress("import", "players") as progress:
            results = []
            for start in range(0, len(commands), 500):
                results += await services.ingestor.ingest(commands[start : start + 500])
                progress.update(min(start + 500, len(commands)), len(commands))
    for result in results:
        if isinstance(result, LedgerError):
            raise result
        if result.appended and not result.replayed:
            imported += 1
        else:
            skipped += 1
    summary = {
        "players": len(board.players),
        "imported": imported,
        "unchanged": skipped,
        "digest": board.digest,
        "level_mismatches": board.level_mismatches,
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"{len(board.players)} players: {imported} imported, {skipped} unchanged "
            f"(data digest {board.digest[:16]}...)"
        )
        if board.level_mismatches:
            print(f"warning: {board.level_mismatches} players' MEE6 level disagrees with their XP")
    return 0


async def export(args: argparse.Namespace, settings: Settings) -> int:
    """Write the guild's (or member's) events as JSON Lines with a digest trailer."""
    async with app_services(settings) as services:
        out = await asyncio.to_thread(args.output.open, "wb") if args.output else sys.stdout.buffer
        try:
            async for line in export_lines(services.pool, args.guild, args.member):
                out.write(line)
        finally:
            if args.output:
                out.close()
    if args.output:
        print(
            f"exported to {args.output}; check it with `ledger verify --export {args.output}`",
            file=sys.stderr,
        )
    return 0


async def forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase a member's personal data; the log, its totals and its chain are untouched."""
    from gateway.cli import print_json

    async with app_services(settings) as services:
        erased = await forget_profile(services.pool, args.member, args.guild)
    if args.json:
        print_json({"member": args.member, "profiles_erased": erased})
    else:
        print(
            f"erased {erased} profile row(s) of member {args.member}; the ledger keeps only "
            "ids and amounts"
        )
    return 0


EXTRA = {
    "import": "import a MEE6 leaderboard (saved JSON pages, or --fetch); idempotent",
    "export": "a guild's or member's events as JSON Lines with a digest",
    "forget": "erase a member's personal data (names); totals and chain stay valid",
}
HANDLERS = {"import": import_data, "export": export, "forget": forget}
