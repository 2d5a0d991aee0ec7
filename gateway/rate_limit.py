"""Per-member rate limits on slash commands (`command_rate_per_minute` per guild, 0 = none).

A sliding window of the last minute per (guild, member). The guild's limit comes from its
config, cached for `config_ttl` seconds so a command costs no extra database read. A limited
command is answered ephemerally with how long to wait, and nothing reaches the ledger.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable

from ledger.guild_config import GuildConfig

WINDOW_SECONDS = 60.0


class SlidingWindow:
    """At most `limit` events per key within the window; pure, with an injectable clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[tuple[int, int], deque[float]] = {}

    def acquire(self, key: tuple[int, int], limit: int) -> float:
        """Record one event and return 0, or return the seconds until one is allowed."""
        if limit <= 0:
            return 0.0
        now = self.clock()
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) >= limit:
            return times[0] + WINDOW_SECONDS - now
        times.append(now)
        if len(self._seen) > 100_000:  # forget idle members rather than grow without bound
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - 60}
        return 0.0


class CommandRateLimit:
    """The limiter the command tree consults, with each guild's limit from its config."""

    def __init__(
        self,
        load_config: Callable[[int], Awaitable[GuildConfig]],
        clock: Callable[[], float] = time.monotonic,
        config_ttl: float = 30.0,
    ) -> None:
        self.load_config = load_config
        self.window = SlidingWindow(clock)
        self.clock = clock
        self.config_ttl = config_ttl
        self._limits: dict[int, tuple[float, int]] = {}

    async def wait_for(self, guild_id: int, member_id: int) -> float:
        """0 when the member may run a command now (and count it), else seconds to wait."""
        cached = self._limits.get(guild_id)
        now = self.clock()
        if cached is None or cached[0] < now:
            limit = (await self.load_config(guild_id)).command_rate_per_minute
            self._limits[guild_id] = (now + self.config_ttl, limit)
        else:
            limit = cached[1]
        return self.window.acquire((guild_id, member_id), limit)
