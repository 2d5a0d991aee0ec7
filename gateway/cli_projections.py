"""Operators' projection subcommands: `project` (workers), `rebuild`, `verify`, `status`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import msgspec

from gateway.cli_audit import file_path, positive_int
from gateway.cli_commands import app_services
from gateway.health import HealthServer, database_healthy, services_collector
from gateway.progress import Progress
from ledger.chain import run_sealer, seal, verify_chain
from ledger.database import Settings, resolve_database
from ledger.export import check_export
from ledger.runtime import Services, open_services
from projections import (
    PROJECTORS,
    RebuildBusy,
    UnknownProjector,
    VerifyReport,
    WorkerFailed,
    catch_up,
    rebuild,
    run_workers,
    status,
    verify,
)
from projections.worker import DEFAULT_MAX_WAIT

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    """Declare the options of a projection subcommand."""
    if name in ("project", "rebuild", "verify"):
        parser.add_argument(
            "projectors",
            nargs="*",
            metavar="PROJECTOR",
            help=f"which projectors (default: all of {', '.join(PROJECTORS)})",
        )
    if name == "project":
        parser.add_argument("--workers", type=int, default=1, help="worker tasks (default 1)")
        parser.add_argument(
            "--once",
            action="store_true",
            help="apply every event committed so far, then exit (1 if an open transaction "
            "holds events back longer than --max-wait)",
        )
        parser.add_argument(
            "--max-wait",
            type=float,
            metavar="SECONDS",
            help="with --once: how long to wait for other workers and open transactions "
            f"(default {DEFAULT_MAX_WAIT:.0f})",
        )
        parser.add_argument(
            "--health-port",
            type=int,
            default=0,
            help="serve /healthz and /metrics on 127.0.0.1:PORT (default: off)",
        )
    if name == "verify":
        parser.add_argument(
            "--chain", action="store_true", help="also recompute the hash chain (tamper evidence)"
        )
        parser.add_argument(
            "--export", type=file_path, metavar="FILE", help="check an export file instead"
        )
        parser.add_argument("--max-differences", type=int, default=20, help="per table")
    if name == "rebuild":
        parser.add_argument(
            "--jobs",
            type=positive_int,
            metavar="N",
            help="processes folding the log member by member (default: one per core and per "
            "million events); a log read in delivery order is folded by one",
        )
    if name in ("verify", "status", "rebuild"):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _names(args: argparse.Namespace) -> list[str] | None:
    unknown = [n for n in args.projectors if n not in PROJECTORS]
    if unknown:
        raise UnknownProjector(
            f"unknown projector(s): {', '.join(unknown)}; known: {', '.join(PROJECTORS)}"
        )
    return list(args.projectors) or None


async def project(args: argparse.Namespace, settings: Settings) -> int:
    """Run projection workers (and the chain sealer) until SIGINT/SIGTERM, or catch up once."""
    names = _names(args)
    if args.max_wait is not None and (not args.once or args.max_wait < 0):
        print("--max-wait takes a number of seconds >= 0, with --once", file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        wait = DEFAULT_MAX_WAIT if args.max_wait is None else args.max_wait
        return await _project_once(names, wait, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # each worker holds four connections (leases and reads, read-ahead, a second lane: D14, and
    # a writer for a backlog's write-behind: D26)
    async with app_services(settings, max_connections=4 * args.workers + 4) as services:
        health = await start_health(services, args.health_port)
        print(f"projecting ({args.workers} worker(s)); Ctrl-C to stop", file=sys.stderr)
        try:
            await asyncio.gather(
                *(run_workers(services.pool, names=names, stop=stop) for _ in range(args.workers)),
                run_sealer(services.pool, stop),
            )
        finally:
            if health:
                await health.stop()
    print("stopped", file=sys.stderr)
    return EXIT_OK


async def _project_once(names: list[str] | None, max_wait: float, settings: Settings) -> int:
    """Catch the projectors up to the last committed event and exit (workers may be running)."""
    async with app_services(settings, max_connections=5) as services:
        began = time.monotonic()
        try:
            applied = await catch_up(services.pool, names, max_wait=max_wait)
        except TimeoutError as exc:
            print(f"not caught up: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(f"projected {applied:,} events in {time.monotonic() - began:.1f}s")
    return EXIT_OK


async def start_health(services: Services, port: int) -> HealthServer | None:
    """Serve /healthz and /metrics on 127.0.0.1:`port` (off when 0), for bots and workers."""
    if not port:
        return None

    async def healthy() -> bool:
        return await database_healthy(services)

    async def lag() -> list[Any]:
        from gateway.health import Sample

        return [
            Sample(
                "ledger_projection_lag_events",
                s.lag_events,
                "Events not yet projected",
                labels=(("projector", s.name),),
            )
            for s in await status(services.pool)
        ] + [
            Sample(
                "ledger_projection_lag_seconds",
                s.lag_seconds,
                "Age of the oldest of them",
                labels=(("projector", s.name),),
            )
            for s in await status(services.pool)
        ]

    server = HealthServer([services_collector(services), lag], healthy, port=port)
    bound = await server.start()
    print(f"health on http://127.0.0.1:{bound}/healthz and /metrics", file=sys.stderr)
    return server


async def rebuild_command(args: argparse.Namespace, settings: Settings) -> int:
    """Blue/green rebuild with a progress bar."""
    names = _names(args)
    async with open_services(resolve_database(settings)) as services:
        try:
            with Progress("rebuild", "events") as progress:
                report = await rebuild(services.pool, names, progress.update, jobs=args.jobs)
        except (RebuildBusy, WorkerFailed) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(
            f"rebuilt {', '.join(report.projectors)}: {report.events:,} events in "
            f"{report.seconds:.1f}s ({report.events_per_second:,.0f}/s, "
            f"{report.jobs} process{'es' if report.jobs > 1 else ''}), swapped in at "
            f"position {report.checkpoint[1]}"
        )
    return EXIT_OK


def print_verify(report: VerifyReport) -> None:
    """Digest per table, and the first differences of any table that disagrees."""
    print(f"replayed {report.events:,} events")
    for table in report.tables:
        mark = "ok  " if table.ok else "DIFF"
        print(f"  {mark} {table.table:<28} {table.rows:>8} rows  digest {table.digest[:16]}")
        for difference in table.differences:
            print(
                f"       key {difference.key}: log says {difference.expected}, "
                f"table has {difference.actual}"
            )
        if table.difference_count > len(table.differences):
            print(f"       ... {table.difference_count - len(table.differences)} more")


async def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    """Replay the log and compare with the live tables (and the chain, or an export)."""
    async with app_services(settings) as services:
        if args.export:
            checked = await check_export(services.pool, args.export)
            if args.json:
                print(
                    msgspec.json.encode(
                        {"ok": checked.ok, "events": checked.events, "problems": checked.problems}
                    ).decode()
                )
            else:
                print(
                    f"export {args.export}: {checked.events} events, "
                    + ("intact and equal to the log" if checked.ok else "MISMATCH")
                )
                for problem in checked.problems[:20]:
                    print(f"  {problem}")
            return EXIT_OK if checked.ok else EXIT_FAILED
        report = await verify(services.pool, _names(args), max_differences=args.max_differences)
        chain = None
        if args.chain:
            await seal(services.pool)
            chain = await verify_chain(services.pool)
    ok = report.ok and (chain is None or chain.ok)
    if args.json:
        out: dict[str, Any] = msgspec.to_builtins(report)
        if chain is not None:
            out["chain"] = {
                "ok": chain.ok,
                "guilds": chain.guilds,
                "events": chain.events,
                "problems": chain.problems,
            }
        out["ok"] = ok
        print(msgspec.json.encode(out).decode())
    else:
        print_verify(report)
        if chain is not None:
            verdict = "ok" if chain.ok else "BROKEN"
            print(f"hash chain: {verdict} ({chain.guilds} guilds, {chain.events:,} events)")
            for problem in chain.problems:
                print(f"  {problem}")
        print("verify: OK" if ok else "verify: MISMATCH")
    return EXIT_OK if ok else EXIT_FAILED


async def status_command(args: argparse.Namespace, settings: Settings) -> int:
    """Checkpoints, lag and what holds each projector back."""
    async with app_services(settings) as services:
        rows = await status(services.pool)
    if args.json:
        print(msgspec.json.encode(rows).decode())
        return EXIT_OK
    for s in rows:
        lease = f"worker pid {s.lease_pid}" if s.lease_pid else "no worker"
        print(
            f"{s.name:<14} at position {s.checkpoint[1]:>10}  lag {s.lag_events:>8} events "
            f"{s.lag_seconds:>7.1f}s  ({lease})"
        )
        if s.held_back_by is not None:
            h = s.held_back_by
            print(
                f"   held back by transaction {h.xid} (pid {h.pid}, {h.state}, "
                f"{h.age_seconds:.0f}s old, {h.application or 'unknown app'}): "
                f"{s.held_back_events} committed events wait behind it"
            )
    return EXIT_OK


EXTRA = {
    "project": "run projection workers (and the hash-chain sealer) until stopped",
    "rebuild": "rebuild read tables from the log (blue/green, progress shown)",
    "verify": "replay the log and compare with the read tables (--chain, --export FILE)",
    "status": "per projector: checkpoint, lag, what holds it back, which worker has it",
}
HANDLERS = {
    "project": project,
    "rebuild": rebuild_command,
    "verify": verify_command,
    "status": status_command,
}
