"""`/healthz` and Prometheus `/metrics` for `ledger bot` and `ledger project`, on a local port.

Metrics come from collectors: async callables returning samples, so each process exposes what
it has (the write side's append counts, errors, pool use and spool size; the workers'
projection lag). The server binds to 127.0.0.1 by default: scrape it locally or via a sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from ledger.runtime import Services


@dataclass(frozen=True)
class Sample:
    """One metric sample."""

    name: str
    value: float
    help: str
    kind: str = "gauge"  # "gauge" | "counter"
    labels: tuple[tuple[str, str], ...] = ()


Collector = Callable[[], Awaitable[Sequence[Sample]]]


def render(samples: Sequence[Sample]) -> str:
    """The Prometheus text exposition format."""
    lines: list[str] = []
    described: set[str] = set()
    for sample in samples:
        if sample.name not in described:
            described.add(sample.name)
            lines.append(f"# HELP {sample.name} {sample.help}")
            lines.append(f"# TYPE {sample.name} {sample.kind}")
        labels = ",".join(f'{k}="{v}"' for k, v in sample.labels)
        lines.append(
            f"{sample.name}{{{labels}}} {sample.value}"
            if labels
            else f"{sample.name} {sample.value}"
        )
    return "\n".join(lines) + "\n"


def services_collector(services: Services) -> Collector:
    """Append rate, errors, pool use and spool size of a process's write side."""

    async def collect() -> Sequence[Sample]:
        stats = services.pool.get_stats()
        samples = [
            Sample(
                "ledger_appended_events_total",
                services.store.appended_events,
                "Events appended by this process",
                "counter",
            ),
            Sample(
                "ledger_appended_commands_total",
                services.store.appended_commands,
                "Commands recorded by this process",
                "counter",
            ),
            Sample(
                "ledger_pool_connections", stats.get("pool_size", 0), "Open database connections"
            ),
            Sample(
                "ledger_pool_available", stats.get("pool_available", 0), "Idle database connections"
            ),
            Sample(
                "ledger_pool_waiting",
                stats.get("requests_waiting", 0),
                "Requests waiting for a connection",
            ),
            Sample(
                "ledger_spool_pending",
                services.spool.size() if services.spool else 0,
                "XP grants spooled during a database outage, waiting for replay",
            ),
        ]
        samples += [
            Sample(
                "ledger_database_errors_total",
                count,
                "Database errors by SQLSTATE",
                "counter",
                (("sqlstate", state),),
            )
            for state, count in sorted(services.store.errors.items())
        ]
        return samples

    return collect


@dataclass
class HealthServer:
    """Serves `/healthz` (200 when `healthy()` says so, else 503) and `/metrics`."""

    collectors: list[Collector]
    healthy: Callable[[], Awaitable[bool]]
    host: str = "127.0.0.1"
    port: int = 9187
    started: float = field(default_factory=time.monotonic)
    _runner: web.AppRunner | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = await self.healthy()
        return web.Response(text="ok\n" if ok else "unhealthy\n", status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        samples: list[Sample] = [
            Sample(
                "ledger_uptime_seconds",
                round(time.monotonic() - self.started, 3),
                "Seconds since the process started",
            ),
        ]
        for collect in self.collectors:
            samples += await collect()
        return web.Response(text=render(samples), content_type="text/plain", charset="utf-8")

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:  # the bound (host, port), port 0 resolved
            return int(address[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner:
            await self._runner.cleanup()


async def database_healthy(services: Services) -> bool:
    """True when a trivial query answers."""
    try:
        async with services.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
    except Exception:
        return False
    return True
