"""Database fixtures: an embedded PostgreSQL per test session (or `DATABASE_URL`), and a fresh
database per test cloned from a migrated template. Tests never skip for want of a database."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger.database import EmbeddedPostgres, make_pool
from ledger.migrations import migrate
from ledger.service import Ledger
from ledger.store import EventStore

T = TypeVar("T")

settings.register_profile(
    "ci",
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

TEMPLATE = "ledger_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the session: `DATABASE_URL`, or a private embedded one."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded"))
    yield embedded.start()
    embedded.stop()


@pytest.fixture(scope="session")
def aio() -> Iterator[asyncio.Runner]:
    """One event loop for the session, so pools can outlive a single `run` call."""
    with asyncio.Runner() as runner:
        yield runner


def _admin_conn(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def template_db(server_url: str, aio: asyncio.Runner) -> str:
    """A database with every migration applied, cloned by each test."""
    with _admin_conn(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))

    async def apply() -> None:
        conn = await psycopg.AsyncConnection.connect(
            make_conninfo(server_url, dbname=TEMPLATE), autocommit=True
        )
        async with conn:
            await migrate(conn)

    aio.run(apply())
    return TEMPLATE


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    with _admin_conn(server_url) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield make_conninfo(server_url, dbname=name)
    with _admin_conn(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass
class LedgerEnv:
    """An open pool, store and service on a fresh database, plus a way to run coroutines."""

    url: str
    runner: asyncio.Runner
    store: EventStore
    ledger: Ledger

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine on the session's loop."""

        async def wrap() -> T:
            return await awaitable

        return self.runner.run(wrap())

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run a query on a separate sync connection (assertions, tampering)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query.encode(), params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def env(db_url: str, aio: asyncio.Runner) -> Iterator[LedgerEnv]:
    """A ledger service over a fresh database."""
    pool = make_pool(db_url, min_size=1, max_size=20)
    aio.run(pool.open(wait=True))
    store = EventStore(pool)
    yield LedgerEnv(url=db_url, runner=aio, store=store, ledger=Ledger(store))
    aio.run(pool.close())


Runner = Callable[[Awaitable[T]], T]
