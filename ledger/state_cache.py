"""The batched writer's memory of state rows, so a batch can be decided without a load.

Deciding a batch needs the members' state rows and the guild's config. Loading them costs a
round trip before every append, a fifth of a transfer batch's time. A writer that appended a
member's last events knows that member's row already: it is the state its decision produced.

Staleness cannot corrupt anything: every row a batch writes carries its expected version, and
every row it only read is checked by version in the same `ledger_append` call (sql/015), so a
row another process moved on fails the append with a conflict, and the ingestor forgets those
rows and retries from a fresh load. The cache only ever holds rows as some committed
transaction left them (or as an append that failed in an unknown way may have left them, which
the version checks catch just the same). Bounded: the least recently written rows go first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ledger.guild_config import GuildConfig
from ledger.member import MemberState

DEFAULT_MAX_ROWS = 25_000  # about 750 bytes a row: some 19 MB


class StateCache:
    """State rows and configs as this process last read or wrote them, with their versions."""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: dict[tuple[int, int], tuple[int, MemberState]] = {}
        self._configs: dict[int, tuple[int, GuildConfig]] = {}

    def config(self, guild_id: int) -> tuple[int, GuildConfig] | None:
        """(version, config) of the guild, if known."""
        return self._configs.get(guild_id)

    def members(
        self, guild_id: int, members: Iterable[int]
    ) -> tuple[dict[int, int], dict[int, MemberState]]:
        """The versions and states of those of `members` that are known."""
        versions: dict[int, int] = {}
        states: dict[int, MemberState] = {}
        rows = self._rows
        for member in members:
            row = rows.get((guild_id, member))
            if row is not None:
                versions[member], states[member] = row
        return versions, states

    def remember(
        self,
        guild_id: int,
        config: tuple[int, GuildConfig] | None,
        versions: Mapping[int, int],
        states: Mapping[int, MemberState],
    ) -> None:
        """Record rows as committed (members without a state are skipped)."""
        if config is not None:
            self._configs[guild_id] = config
        rows = self._rows
        for member, version in versions.items():
            state = states.get(member)
            if state is None:
                continue
            key = (guild_id, member)
            rows.pop(key, None)  # re-inserted last: the dict's order is the eviction order
            rows[key] = (version, state)
        while len(rows) > self.max_rows:
            del rows[next(iter(rows))]

    def forget(self, guild_id: int, members: Iterable[int]) -> None:
        """Drop the guild's config and these members' rows (after a conflict or an error)."""
        self._configs.pop(guild_id, None)
        for member in members:
            self._rows.pop((guild_id, member), None)
