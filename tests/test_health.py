"""/healthz and /metrics answer from the process's own figures."""

from __future__ import annotations

import urllib.request

from gateway.health import HealthServer, Sample, render, services_collector
from ledger import commands as cmd
from ledger.runtime import Services
from tests.fix_db import LedgerEnv


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_render_is_prometheus_text() -> None:
    text = render(
        [Sample("a_total", 3, "A things", "counter", (("k", "v"),)), Sample("b", 1.5, "B")]
    )
    assert text == (
        '# HELP a_total A things\n# TYPE a_total counter\na_total{k="v"} 3\n'
        "# HELP b B\n# TYPE b gauge\nb 1.5\n"
    )


def test_health_and_metrics_endpoints(env: LedgerEnv) -> None:
    from ledger.ingest import BatchIngestor, CommandBatcher

    ingestor = BatchIngestor(env.store)
    services = Services(env.store.pool, env.store, env.ledger, ingestor, CommandBatcher(ingestor))
    env.run(
        env.ledger.execute(cmd.Transfer(guild_id=1, command_id="t", from_id=1, to_id=2, amount=3))
    )
    healthy = True

    async def is_healthy() -> bool:
        return healthy

    server = HealthServer([services_collector(services)], is_healthy, port=0)
    port = env.run(server.start())
    try:
        status, body = env.run(_to_thread(get, port, "/healthz"))
        assert (status, body) == (200, "ok\n")
        status, metrics = env.run(_to_thread(get, port, "/metrics"))
        assert status == 200
        assert "ledger_appended_events_total 4" in metrics
        assert "ledger_pool_connections" in metrics and "ledger_uptime_seconds" in metrics
        healthy = False
        assert env.run(_to_thread(get, port, "/healthz"))[0] == 503
    finally:
        env.run(server.stop())


async def _to_thread(fn, *args):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(fn, *args)


def test_ledger_bot_accepts_a_health_port() -> None:
    from gateway.cli import build_parser

    args = build_parser().parse_args(["bot", "--health-port", "9187"])
    assert args.health_port == 9187
    args = build_parser().parse_args(["project", "--health-port", "9188", "--workers", "2"])
    assert (args.health_port, args.workers) == (9188, 2)
