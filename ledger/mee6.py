"""Import a MEE6 leaderboard: the JSON pages of its public leaderboard API, saved or fetched.

MEE6 uses the same level curve (5L² + 50L + 100 XP from level L to L+1), so an imported member
shows MEE6's level. Each player becomes an `ImportXp` command whose id is derived from the data's
digest, and which grants only what was not imported before: importing the same data twice, or
an older export, changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from ledger import commands as cmd
from ledger.errors import InvalidInput
from ledger.levels import level_for_xp

LEADERBOARD_URL = "https://mee6.xyz/api/plugins/levels/leaderboard/{guild_id}?page={page}"
MAX_PAGES = 10_000


class Mee6Player(msgspec.Struct, frozen=True):
    """A player as the API lists them (other fields are ignored)."""

    id: str | int
    xp: int
    level: int = -1
    username: str = ""


class Mee6Page(msgspec.Struct, frozen=True):
    """One page of the API's answer."""

    players: list[Mee6Player]


_page_decoder = msgspec.json.Decoder(Mee6Page)


@dataclass(frozen=True)
class Leaderboard:
    """Players by id, and a digest of (id, xp) that names this data."""

    players: dict[int, Mee6Player]
    digest: str
    level_mismatches: int


def parse_pages(pages: Iterable[bytes]) -> Leaderboard:
    """Decode pages; refuse malformed data with a clear message."""
    players: dict[int, Mee6Player] = {}
    for number, page in enumerate(pages, start=1):
        try:
            decoded = _page_decoder.decode(page)
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"Page {number} is not a MEE6 leaderboard page: {exc}") from None
        for player in decoded.players:
            try:
                member_id = int(player.id)
            except ValueError:
                raise InvalidInput(
                    f"Page {number}: player id {player.id!r} is not a number."
                ) from None
            if member_id <= 0 or player.xp < 0:
                raise InvalidInput(f"Page {number}: player {player.id} has an invalid id or XP.")
            players[member_id] = player
    if not players:
        raise InvalidInput("The leaderboard has no players.")
    canonical = ";".join(f"{m}:{p.xp}" for m, p in sorted(players.items()))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    mismatches = sum(1 for p in players.values() if p.level >= 0 and p.level != level_for_xp(p.xp))
    return Leaderboard(players, digest, mismatches)


def import_commands(
    guild_id: int, board: Leaderboard, actor: cmd.Actor, at: datetime
) -> list[cmd.ImportXp]:
    """One idempotent command per player."""
    return [
        cmd.ImportXp(
            guild_id=guild_id,
            command_id=f"mee6:{board.digest[:20]}:{member_id}",
            member_id=member_id,
            actor=actor,
            xp=player.xp,
            source_ref=f"mee6:{board.digest}",
            at=at,
            source="import",
        )
        for member_id, player in sorted(board.players.items())
    ]


def _get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "discord-ledger import"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        body: bytes = response.read()
        return body


async def fetch_pages(
    guild_id: int, url_template: str = LEADERBOARD_URL, request_timeout: float = 20.0
) -> list[bytes]:
    """Fetch every page of a guild's public leaderboard, until a page has no players."""
    if not url_template.startswith(("https://", "http://")):
        raise InvalidInput("The leaderboard URL must be http(s).")
    pages: list[bytes] = []
    for page in range(MAX_PAGES):
        url = url_template.format(guild_id=guild_id, page=page)
        body = await asyncio.to_thread(_get, url, request_timeout)
        if not _page_decoder.decode(body).players:
            break
        pages.append(body)
    return pages
