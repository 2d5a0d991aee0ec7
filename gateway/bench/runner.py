"""Runs the benchmark workloads beside their baselines and renders the report."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from pathlib import Path

from gateway.bench import baselines, lag, projection_workloads, workloads
from gateway.bench.checks import reported
from gateway.bench.model import FULL, QUICK, BenchReport, Result, Sizes
from gateway.bench.synthetic import SyntheticGuild
from ledger.consistency import check_guild
from ledger.runtime import Services, open_services

__all__ = ["FULL", "QUICK", "BenchReport", "Result", "Sizes", "render_markdown", "run_bench"]

CLIENTS = 16
WORKLOADS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")


SETTINGS = (
    "server_version",
    "shared_buffers",
    "synchronous_commit",
    "wal_sync_method",
    "fsync",
    "max_connections",
    "wal_level",
)


async def describe(services: Services, data_dir: Path | None) -> dict[str, object]:
    """Cores, PostgreSQL version and key settings, and the disk's fsync rate."""
    setup: dict[str, object] = {"cores": os.cpu_count()}
    async with services.pool.connection() as conn:
        for name in SETTINGS:
            cur = await conn.execute("SELECT current_setting(%s)", (name,))
            row = await cur.fetchone()
            setup[name] = row[0] if row else None
    if data_dir is not None:
        setup["pg_test_fsync_fdatasync_ops_per_s"] = await asyncio.to_thread(
            baselines.fsync_rate, data_dir
        )
    return setup


@reported
async def invariants(services: Services, guild_id: int) -> str:
    """'ok', or the problems the write-side consistency check found."""
    report = await check_guild(services.pool, guild_id)
    return "ok" if report.ok else "; ".join(report.problems[:3])


async def run_bench(
    url: str,
    data_dir: Path | None,
    quick: bool,
    only: set[str] | None = None,
    say: Callable[[str], None] = print,
) -> BenchReport:
    """Run the selected workloads (all by default); `say` narrates progress."""
    sizes = QUICK if quick else FULL
    wanted = only or set(WORKLOADS)
    async with open_services(url, max_connections=CLIENTS + 8) as services:
        report = BenchReport(await describe(services, data_dir))
        base_guild = random.randint(10**15, 10**16)
        p1_rate: float | None = None
        if wanted & {"P1", "P3"}:
            say("P1: raw single-row commits (pgbench, 16 clients) ...")
            raw = await asyncio.to_thread(
                baselines.pgbench, url, baselines.SINGLE_ROW, CLIENTS, sizes.seconds
            )
            say("P1: eventsourcing recorder (16 threads) ...")
            peer = await asyncio.to_thread(
                baselines.eventsourcing_saves, url, CLIENTS, sizes.seconds
            )
            say("P1: ledger transfers, one transaction per command ...")
            single = await workloads.transfers(
                services, base_guild + 1, 1000, CLIENTS, sizes.seconds, batched=False
            )
            say("P1: ledger transfers, group commit ...")
            ours = await workloads.transfers(
                services, base_guild + 2, 1000, CLIENTS, sizes.seconds, batched=True
            )
            p1_rate = ours.rate
            ratio = ours.rate / raw
            peer_ratio = ours.rate / peer if peer else None
            notes = (
                f"one tx per command: {single.rate:,.0f}/s (p99 {single.percentile(0.99):.1f} ms)"
            )
            notes += (
                f"; eventsourcing: {peer:,.0f} saves/s, ours {peer_ratio:.1f}x"
                if peer
                else "; eventsourcing not installed (uv run --group bench)"
            )
            report.results.append(
                Result(
                    "P1",
                    "single transfers, 16 clients",
                    ours.rate,
                    "transfers/s",
                    "≥ 0.5x raw single-row commits, ≥ 5x eventsourcing",
                    raw,
                    "raw single-row commits/s",
                    ratio,
                    ratio >= 0.5 and (peer_ratio is None or peer_ratio >= 5),
                    ours.percentile(0.5),
                    ours.percentile(0.99),
                    notes,
                    await invariants(services, base_guild + 2),
                )
            )
        if "P2" in wanted:
            say("P2: raw 100-row batched inserts (pgbench, 16 clients) ...")
            raw_rows = 100 * await asyncio.to_thread(
                baselines.pgbench, url, baselines.HUNDRED_ROWS, CLIENTS, sizes.seconds
            )
            say("P2: ledger message-XP ingestion, batched ...")
            xp = await workloads.message_xp(
                services, base_guild + 3, sizes.p2_commands, sizes.p2_members
            )
            ratio = xp.rate / raw_rows
            report.results.append(
                Result(
                    "P2",
                    "message-XP ingestion (batched path)",
                    xp.rate,
                    "events/s",
                    "≥ 0.4x raw batched-insert rows/s",
                    raw_rows,
                    "raw batched rows/s",
                    ratio,
                    ratio >= 0.4,
                    xp.percentile(0.5),
                    xp.percentile(0.99),
                    f"{sizes.p2_commands:,} commands over {sizes.p2_members:,} members",
                    await invariants(services, base_guild + 3),
                )
            )
        if "P3" in wanted and p1_rate:
            say("P3: hot accounts, 16 clients among 10 members ...")
            before = dict(services.store.errors)
            hot = await workloads.transfers(
                services, base_guild + 4, 10, CLIENTS, sizes.seconds, batched=True
            )
            errors = {k: v - before.get(k, 0) for k, v in services.store.errors.items()}
            deadlocks = errors.get("40P01", 0)
            ratio = hot.rate / p1_rate
            report.results.append(
                Result(
                    "P3",
                    "hot accounts: 16 clients, 10 members",
                    hot.rate,
                    "transfers/s",
                    "no deadlocks, no retry storms, ≥ 0.3x P1",
                    p1_rate,
                    "P1 transfers/s",
                    ratio,
                    ratio >= 0.3 and deadlocks == 0,
                    hot.percentile(0.5),
                    hot.percentile(0.99),
                    f"deadlocks {deadlocks}, conflicts retried {errors.get('LX409', 0)}, "
                    f"refused (insufficient funds etc.) {hot.refused}",
                    await invariants(services, base_guild + 4),
                )
            )
        await _projection_workloads(services, url, sizes, wanted, base_guild, p1_rate, report, say)
        if "P8" in wanted:
            say(f"P8: seeding a member with {sizes.p8_history:,} past events ...")
            guild = base_guild + 8
            await workloads.seed_history(services, guild, 1, sizes.p8_history)
            old, new = await workloads.old_versus_new(services, guild, 1, sizes.p8_samples)
            old_p50, new_p50 = old.percentile(0.5) or 0.0, new.percentile(0.5) or 1e-9
            ratio = old_p50 / new_p50
            report.results.append(
                Result(
                    "P8",
                    f"command for a member with {sizes.p8_history:,} events",
                    old_p50,
                    "ms p50",
                    "within 20% of a new member",
                    new_p50,
                    "new member ms p50",
                    ratio,
                    ratio <= 1.2,
                    old_p50,
                    old.percentile(0.99),
                    "state rows: a command never reads history",
                    await invariants(services, guild) if quick else "ok (state row set)",
                )
            )
    return report


async def _projection_workloads(
    services: Services,
    url: str,
    sizes: Sizes,
    wanted: set[str],
    base_guild: int,
    p1_rate: float | None,
    report: BenchReport,
    say: Callable[[str], None],
) -> None:
    """P4-P7 on one big synthetic guild (P7 on a guild of its own)."""
    big = SyntheticGuild(base_guild + 5)
    if "P4" in wanted:
        report.results.append(
            await projection_workloads.p4_busy_guild(
                services, base_guild + 40, sizes.p4_events, sizes.p4_members, say
            )
        )
        report.results.append(
            await projection_workloads.p4_catch_up(services, big, sizes.p4_events, say)
        )
    if "P5" in wanted:
        report.results.append(
            await projection_workloads.p5_rebuild(
                services, url, big, sizes.p5_events, sizes.p6_members, say
            )
        )
    if "P6" in wanted:
        report.results += await projection_workloads.p6_queries(
            services, big, sizes.p6_members, sizes.p6_samples, say
        )
    if "P7" in wanted:
        if not p1_rate:
            say("P7: a short P1 first, for its rate ...")
            p1 = await workloads.transfers(
                services, base_guild + 1, 1000, CLIENTS, sizes.seconds / 2, batched=True
            )
            p1_rate = p1.rate
        report.results.append(
            await lag.p7_lag(
                services,
                url,
                base_guild + 7,
                p1_rate,
                sizes.p7_seconds,
                say,
            )
        )


def render_text(report: BenchReport) -> str:
    """A plain table for the terminal."""
    lines = ["setup: " + ", ".join(f"{k}={v}" for k, v in report.setup.items()), ""]
    for r in report.results:
        verdict = {True: "MET", False: "MISSED", None: "-"}[r.met]
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        base = f"{r.baseline:,.1f} {r.baseline_label}" if r.baseline is not None else ""
        lat = (
            f" p50 {r.p50_ms:.2f} ms p99 {r.p99_ms:.2f} ms"
            if r.p50_ms is not None and r.p99_ms is not None
            else ""
        )
        lines.append(f"{r.key} {r.workload}: {r.figure:,.1f} {r.unit}{lat}")
        lines.append(f"   baseline {base}; ratio {ratio}; target {r.target}: {verdict}")
        lines.append(f"   invariants: {r.invariants}. {r.notes}")
    return "\n".join(lines)


def render_markdown(report: BenchReport, command: str) -> str:
    """The table for BENCHMARKS.md, with the command that produced it."""
    rows = [
        f"Command: `{command}`",
        "",
        "Set-up: " + ", ".join(f"{k} = {v}" for k, v in report.setup.items()),
        "",
        "| # | workload | result | baseline (same run) | ratio | target | met | p50 / p99 ms "
        "| invariants | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        lat = (
            f"{r.p50_ms:.2f} / {r.p99_ms:.2f}"
            if r.p50_ms is not None and r.p99_ms is not None
            else "-"
        )
        rows.append(
            f"| {r.key} | {r.workload} | {r.figure:,.1f} {r.unit} | "
            f"{'-' if r.baseline is None else f'{r.baseline:,.1f} {r.baseline_label}'} | "
            f"{'-' if r.ratio is None else f'{r.ratio:.2f}x'} | {r.target} | "
            f"{ {True: 'yes', False: 'no', None: '-'}[r.met] } | {lat} | {r.invariants} | "
            f"{r.notes} |"
        )
    return "\n".join(rows) + "\n"
