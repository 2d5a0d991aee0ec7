"""Members' personal data (display names), kept outside the log so it can be erased."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool

UPSERT_NAMES = """
INSERT INTO member_profiles (guild_id, member_id, display_name)
SELECT %s, u.member_id, u.name FROM unnest(%s::bigint[], %s::text[]) AS u(member_id, name)
ON CONFLICT (guild_id, member_id)
DO UPDATE SET display_name = excluded.display_name, updated_at = now()
"""
NAMES = """
SELECT member_id, display_name FROM member_profiles
 WHERE guild_id = %s AND member_id = ANY(%s::bigint[])
"""
FORGET = """
DELETE FROM member_profiles WHERE member_id = %s AND (%s::bigint IS NULL OR guild_id = %s)
"""
MAX_NAME = 100


def clean_name(name: str) -> str:
    """A display name without control characters, at most 100 characters."""
    return "".join(ch for ch in name if ch.isprintable())[:MAX_NAME].strip()


async def remember_names(
    pool: AsyncConnectionPool, guild_id: int, names: Sequence[tuple[int, str]]
) -> None:
    """Store or update display names."""
    cleaned = [(member, clean_name(name)) for member, name in names if clean_name(name)]
    if not cleaned:
        return
    async with pool.connection() as conn:
        await conn.execute(
            UPSERT_NAMES, (guild_id, [m for m, _ in cleaned], [n for _, n in cleaned])
        )


async def names_of(
    pool: AsyncConnectionPool, guild_id: int, members: Sequence[int]
) -> dict[int, str]:
    """Display names of `members` that have one."""
    async with pool.connection() as conn:
        cur = await conn.execute(NAMES, (guild_id, list(members)))
        return {member: name for member, name in await cur.fetchall()}


async def forget(pool: AsyncConnectionPool, member_id: int, guild_id: int | None = None) -> int:
    """Erase a member's personal data (in one guild, or everywhere); returns rows erased."""
    async with pool.connection() as conn:
        cur = await conn.execute(FORGET, (member_id, guild_id, guild_id))
        return cur.rowcount
