"""Auditors' subcommands: `audit` (a member's statement), `replay` (a guild as of a moment),
`revert` (compensating events, previewed first)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.cli_commands import app_services
from ledger import commands as cmd
from ledger.audit import Cutoff, guild_as_of, select_for_revert, statement
from ledger.database import Settings
from ledger.errors import InvalidInput
from ledger.stats import guild_stats
from projections import queries

CLI_ACTOR_HELP = "Discord id of the operator doing this (recorded as the actor; default 0)"


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


MAX_ID = 2**63 - 1  # ids and positions are PostgreSQL bigints


def positive_int(text: str) -> int:
    """A positive integer argument that fits a bigint (ids, positions, counts)."""
    value = discord_id(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def discord_id(text: str) -> int:
    """A whole number from 0 to 2**63 - 1 (a Discord id; 0 for the CLI's own actor)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"too large (at most {MAX_ID}): {text}")
    return value


def file_path(text: str) -> Path:
    """A file name (not empty, no NUL character, and bytes the file system can be given)."""
    try:
        os.fsencode(text)
        valid = bool(text) and "\x00" not in text
    except UnicodeEncodeError:  # a lone surrogate has no bytes (argv's undecodable bytes do)
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"not a file name: {text!r}")
    return Path(text)


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Declare the options of an audit subcommand."""
    parser.add_argument("guild", type=positive_int, help="guild id")
    if name == "audit":
        parser.add_argument("member", type=positive_int, help="member id")
    if name in ("audit", "replay"):
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--as-of", type=parse_time, help="recorded time (ISO 8601, UTC)")
        when.add_argument("--at", type=positive_int, metavar="POSITION", help="log position")
    if name in ("replay", "stats"):
        parser.add_argument("--top", type=positive_int, default=10, help="how many to list")
    if name == "stats":
        parser.add_argument("--plot", type=file_path, metavar="FILE.png", help="draw charts")
    if name == "revert":
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--positions", help="comma-separated event positions")
        which.add_argument("--actor", type=positive_int, help="events caused by this actor")
        which.add_argument("--member", type=positive_int, help="events of this member")
        parser.add_argument("--since", type=parse_time, help="from this recorded time")
        parser.add_argument("--until", type=parse_time, help="up to this recorded time")
        parser.add_argument("--reason", default="", help="why (kept in the log)")
        parser.add_argument("--by", type=discord_id, default=0, help=CLI_ACTOR_HELP)
        parser.add_argument("--yes", action="store_true", help="apply without asking")
        parser.add_argument(
            "--on-shortfall",
            choices=["refuse", "clamp"],
            default="refuse",
            help="when a member no longer holds what is reverted: refuse (default), or clamp "
            "(take back what they hold; the rest is recorded as a shortfall)",
        )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _cutoff(args: argparse.Namespace) -> Cutoff:
    return Cutoff(as_of=args.as_of, position=args.at)


async def audit(args: argparse.Namespace, settings: Settings) -> int:
    """Print a member's statement; exit 1 if its closing figures disagree with the log's."""
    from gateway.cli import print_json

    async with app_services(settings) as services:
        result = await statement(services.pool, args.guild, args.member, _cutoff(args))
        loaded = await services.store.load(args.guild, [], [args.member])
        wallet = await queries.balance(services.pool, args.guild, args.member)
        levels = await queries.profile(services.pool, args.guild, args.member)
    current = loaded.states.get(args.member)
    whole = args.as_of is None and args.at is None
    agrees = not whole or current is None or current == result.closing
    # the read tables may lag the log (no worker running): shown, never an error
    read_tables = {
        "balance": wallet.balance if wallet else 0,
        "xp": levels.xp if levels else 0,
        "level": levels.level if levels else 0,
    }
    closing = result.closing
    tables_agree = read_tables == {
        "balance": closing.balance,
        "xp": closing.xp,
        "level": closing.level,
    }
    if args.json:
        print_json(
            {
                "guild": args.guild,
                "member": args.member,
                "lines": [asdict(line) for line in result.lines],
                "closing": {
                    "balance": result.closing.balance,
                    "xp": result.closing.xp,
                    "level": result.closing.level,
                    "items": result.closing.items,
                    "active_warnings": len(result.closing.warnings),
                },
                "matches_state": agrees,
                "read_tables": read_tables,
                "matches_read_tables": tables_agree,
            }
        )
    else:
        if not result.lines:
            print(f"no events for member {args.member} in guild {args.guild}")
        for line in result.lines:
            print(
                f"{line.position:>10} {line.recorded_at:%Y-%m-%d %H:%M:%S} "
                f"{line.lc_delta:>+8} LC = {line.balance:>8}  {line.xp_delta:>+6} XP = "
                f"{line.xp:>8} (lvl {line.level:>3})  {line.description}"
                f"  [by <@{line.actor_id}>, {line.command_id}]"
            )
        c = result.closing
        print(
            f"closing: {c.balance} LC, {c.xp} XP, level {c.level}, items {c.items or '{}'}, "
            f"{len(c.warnings)} active warnings" + ("" if agrees else "  MISMATCH with state")
        )
        if whole:
            print(
                "read tables agree"
                if tables_agree
                else f"read tables say {read_tables} (behind the log? see `ledger status`)"
            )
    return 0 if agrees else 1


async def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Print a guild's balances, levels and XP leaderboard as of a moment."""
    from gateway.cli import print_json

    async with app_services(settings) as services:
        states = await guild_as_of(services.pool, args.guild, _cutoff(args))
    ranked = sorted(states.items(), key=lambda kv: (-kv[1].xp, kv[0]))
    summary: dict[str, Any] = {
        "guild": args.guild,
        "members": len(states),
        "total_lc": sum(s.balance for s in states.values()),
        "total_xp": sum(s.xp for s in states.values()),
        "leaderboard": [
            {"rank": i + 1, "member": m, "xp": s.xp, "level": s.level, "balance": s.balance}
            for i, (m, s) in enumerate(ranked[: args.top])
        ],
    }
    if args.json:
        print_json(summary)
        return 0
    print(
        f"guild {args.guild}: {summary['members']} members, {summary['total_lc']} LC in "
        f"wallets, {summary['total_xp']} XP"
    )
    for row in summary["leaderboard"]:
        print(
            f"#{row['rank']:<3} <@{row['member']}>  level {row['level']:>3}  {row['xp']:>9} XP "
            f"{row['balance']:>9} LC"
        )
    return 0


async def revert(args: argparse.Namespace, settings: Settings) -> int:
    """Preview a revert, then (with --yes or on confirmation) append compensating events."""
    from gateway.cli import print_json

    async with app_services(settings) as services:
        if args.positions:
            try:
                positions = sorted({int(p) for p in args.positions.split(",") if p.strip()})
            except ValueError:
                raise InvalidInput("--positions takes whole numbers separated by commas") from None
        else:
            positions = await select_for_revert(
                services.pool,
                args.guild,
                actor_id=args.actor,
                member_id=args.member,
                since=args.since,
                until=args.until,
            )
        if not positions:
            print("nothing matches: no events to revert")
            return 0
        key = hashlib.sha256(",".join(map(str, positions)).encode()).hexdigest()[:24]
        command = cmd.Revert(
            guild_id=args.guild,
            command_id=f"revert:{key}",
            positions=tuple(positions),
            actor=cmd.Actor(args.by, is_moderator=True, is_admin=True),
            reason=args.reason,
            source="cli",
            on_shortfall=args.on_shortfall,
        )
        preview = await services.ledger.preview(command)
        members = sorted(preview.members)
        before = (await services.store.load(args.guild, [], members)).states
        effects: list[dict[str, Any]] = [
            {
                "member": m,
                "balance": [before[m].balance if m in before else 0, preview.members[m].balance],
                "xp": [before[m].xp if m in before else 0, preview.members[m].xp],
                "level": [before[m].level if m in before else 0, preview.members[m].level],
            }
            for m in members
        ]
        if not args.json:
            print(f"revert of {len(positions)} event(s): {preview.note or 'preview'}")
            for e in effects:
                print(
                    f"  <@{e['member']}>: {e['balance'][0]} -> {e['balance'][1]} LC, "
                    f"{e['xp'][0]} -> {e['xp'][1]} XP, level {e['level'][0]} -> "
                    f"{e['level'][1]}"
                )
        apply = args.yes
        if not apply and preview.events and sys.stdin.isatty():
            answer = await asyncio.to_thread(input, "apply this revert? [y/N] ")
            apply = answer.strip().lower() in ("y", "yes")
        outcome = await services.ledger.execute(command) if apply and preview.events else None
    if args.json:
        print_json(
            {
                "positions": positions,
                "effects": effects,
                "applied": outcome is not None,
                "appended": outcome.positions if outcome else [],
            }
        )
    elif outcome is not None:
        print(f"applied: {len(outcome.positions)} compensating event(s) appended")
    elif preview.events:
        print("not applied (re-run with --yes to apply)")
    return 0


async def stats(args: argparse.Namespace, settings: Settings) -> int:
    """LC supply, minted/burned and XP per day, warnings per week, top earners and movers."""
    from gateway.charts import render_stats
    from gateway.cli import print_json

    async with app_services(settings) as services:
        result = await guild_stats(services.pool, args.guild)
    summary: dict[str, Any] = {
        "guild": args.guild,
        "events": result.events,
        "supply": result.supply,
        "minted_per_day": {d.isoformat(): v for d, v in sorted(result.minted.items())},
        "burned_per_day": {d.isoformat(): v for d, v in sorted(result.burned.items())},
        "xp_per_day": {d.isoformat(): v for d, v in sorted(result.xp.items())},
        "warnings_per_week": {f"{y}-W{w:02d}": n for (y, w), n in sorted(result.warnings.items())},
        "top_earners": [{"member": m, "lc": v} for m, v in result.top(result.earned, args.top)],
        "top_movers": [{"member": m, "lc": v} for m, v in result.top(result.moved, args.top)],
    }
    if args.plot:
        await asyncio.to_thread(render_stats, result, args.plot)
    if args.json:
        print_json(summary)
        return 0
    print(
        f"guild {args.guild}: {result.events} events, supply {result.supply} LC, minted "
        f"{sum(result.minted.values())} LC, burned {sum(result.burned.values())} LC, "
        f"{sum(result.xp.values())} XP over {len(result.xp)} days, "
        f"{sum(result.warnings.values())} warnings"
    )
    print(
        "top earners: " + ", ".join(f"<@{e['member']}> {e['lc']}" for e in summary["top_earners"])
    )
    print("top movers:  " + ", ".join(f"<@{e['member']}> {e['lc']}" for e in summary["top_movers"]))
    if args.plot:
        print(f"charts written to {args.plot}")
    return 0


EXTRA = {
    "audit": "a member's statement: every event with running LC, XP, level (--as-of/--at)",
    "replay": "a guild's balances, levels and leaderboard as of a time or position",
    "revert": "compensate events by positions, actor or member (preview, then --yes)",
    "stats": "a guild's LC supply, minted/burned and XP per day, warnings, top members",
}
HANDLERS = {"audit": audit, "replay": replay, "revert": revert, "stats": stats}
