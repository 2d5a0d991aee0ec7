"""Numbered SQL migrations from `sql/`, each applied once, in order, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

# Any constant shared by every process that migrates this database.
MIGRATION_LOCK_ID = 0x1ED6E8

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def migrations_dir() -> Path:
    """The `sql/` folder of a source checkout, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sql", here / "_sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no sql/ migrations folder next to the ledger package")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, to notice an applied migration that was edited."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """The migrations on disk disagree with those recorded in the database."""


def discover(folder: Path | None = None) -> list[Migration]:
    """The migrations in `folder`, ordered by number."""
    found = []
    for path in sorted((folder or migrations_dir()).glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not NNN_name.sql: {path.name}")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a number")
    return found


CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: psycopg.AsyncConnection, folder: Path | None = None) -> list[str]:
    """Apply pending migrations in one transaction; return the names applied."""
    pending = discover(folder)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(CREATE_HISTORY)
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
        recorded: dict[int, str] = dict(await cur.fetchall())
        for migration in pending:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:03d}_{migration.name} was edited after "
                        "it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(f"{migration.version:03d}_{migration.name}")
    return applied_now
