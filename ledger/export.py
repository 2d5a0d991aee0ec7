"""Export a guild's (or one member's) events as JSON Lines with a digest, and check one.

Each line is one event exactly as stored; the last line is a trailer
`{"digest": ..., "events": N, "guild_id": ..., "member_id": ...}`, where the digest is the
SHA-256 of all the event lines (with their newlines). `check_export` recomputes it and compares
every exported event with the live log, so neither the file nor the log can change unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from psycopg_pool import AsyncConnectionPool

from ledger.store import EVENT_COLUMNS

EXPORT = f"""
SELECT {EVENT_COLUMNS} FROM events
 WHERE guild_id = %(guild)s AND (%(member)s::bigint IS NULL OR stream = %(member)s)
 ORDER BY position
"""  # noqa: S608 (a constant column list, no input)
BY_POSITIONS = f"""
SELECT {EVENT_COLUMNS} FROM events WHERE guild_id = %s AND position = ANY(%s::bigint[])
"""  # noqa: S608 (a constant column list, no input)


class ExportedEvent(msgspec.Struct, frozen=True):
    """One exported line."""

    position: int
    tx: str
    guild_id: int
    stream: int
    version: int
    type: str
    schema_version: int
    data: msgspec.Raw
    meta: msgspec.Raw
    recorded_at: str


class Trailer(msgspec.Struct, frozen=True):
    """The export's last line."""

    digest: str
    events: int
    guild_id: int
    member_id: int | None = None


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(ExportedEvent)
_trailer_decoder = msgspec.json.Decoder(Trailer)


def _line(row: tuple[object, ...]) -> bytes:
    position, tx, guild, stream, version, type_name, schema, data, meta, recorded_at = row
    event = ExportedEvent(
        position=position,  # type: ignore[arg-type]
        tx=str(tx),
        guild_id=guild,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        version=version,  # type: ignore[arg-type]
        type=str(type_name),
        schema_version=schema,  # type: ignore[arg-type]
        data=msgspec.Raw(str(data).encode()),
        meta=msgspec.Raw(str(meta).encode()),
        recorded_at=recorded_at.isoformat(),  # type: ignore[attr-defined]
    )
    return _encoder.encode(event) + b"\n"


async def export_lines(
    pool: AsyncConnectionPool, guild_id: int, member_id: int | None = None
) -> AsyncIterator[bytes]:
    """The export, line by line (streamed), trailer last."""
    digest = hashlib.sha256()
    count = 0
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(name="export") as cursor,
    ):
        await cursor.execute(EXPORT, {"guild": guild_id, "member": member_id})
        async for row in cursor:
            line = _line(row)
            digest.update(line)
            count += 1
            yield line
    yield _encoder.encode(Trailer(digest.hexdigest(), count, guild_id, member_id)) + b"\n"


@dataclass
class ExportCheck:
    """What checking an export found."""

    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file is intact and every event matches the log."""
        return not self.problems


async def check_export(pool: AsyncConnectionPool, path: Path, chunk: int = 5000) -> ExportCheck:
    """Recompute the digest and compare each exported event with the live log."""
    result = ExportCheck()
    lines = (await asyncio.to_thread(path.read_bytes)).splitlines(keepends=True)
    if not lines:
        result.problems.append("the file is empty")
        return result
    try:
        trailer = _trailer_decoder.decode(lines[-1])
    except msgspec.DecodeError:
        result.problems.append("the last line is not an export trailer (file truncated?)")
        return result
    body = lines[:-1]
    digest = hashlib.sha256(b"".join(body)).hexdigest()
    if digest != trailer.digest or len(body) != trailer.events:
        result.problems.append(
            f"digest mismatch: the file's events hash to {digest[:16]}..., the trailer says "
            f"{trailer.digest[:16]}... ({len(body)} lines, trailer says {trailer.events})"
        )
    exported = []
    for number, line in enumerate(body, start=1):
        try:
            exported.append(_line_decoder.decode(line))
        except msgspec.DecodeError:
            result.problems.append(f"line {number} is not an exported event")
    result.events = len(exported)
    for start in range(0, len(exported), chunk):
        part = {e.position: e for e in exported[start : start + chunk]}
        async with pool.connection() as conn:
            cur = await conn.execute(BY_POSITIONS, (trailer.guild_id, list(part)))
            live = {row[0]: _line(row) for row in await cur.fetchall()}
        for position, event in part.items():
            if position not in live:
                result.problems.append(f"event {position} is not in the log")
            elif _encoder.encode(event) + b"\n" != live[position]:
                result.problems.append(f"event {position} differs from the log")
    return result
