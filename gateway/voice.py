"""Voice sessions: who is in which voice channel, unmuted or not, and the ticks they earn.

Pure (no Discord types, no I/O): the listeners feed it `VoiceStateSeen` updates, and the
scheduler asks it for the ticks due (`due`). Time is cut into windows of the guild's
`voice_tick_seconds` counted from the Unix epoch; window `k` is ticked once, after it ends, for
every member who has been in voice since its start and is, at the tick, in a channel with at
least `min_humans` unmuted humans. Windows depend only on the clock, so two bot instances (or a
retried job) produce the same tick indexes and hence the same command ids.

The count is passed to the ledger with each tick and the ledger's `VoiceTick` rule decides
again (≥ `voice_min_humans` unmuted humans); filtering here only spares it empty commands.
Bots are never tracked: they neither earn nor count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class VoiceStateSeen:
    """A member's voice state after an update: `channel_id` None when they left voice.

    `muted` is any of self-mute, self-deafen, server mute, server deafen or suppression.
    """

    guild_id: int
    member_id: int
    channel_id: int | None
    muted: bool
    at: datetime
    is_bot: bool = False
    role_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class VoiceTickDue:
    """One member's tick for window `tick_index`, with the unmuted humans in their channel."""

    guild_id: int
    member_id: int
    channel_id: int
    unmuted_humans: int
    tick_index: int
    at: datetime
    role_ids: frozenset[int] = frozenset()
    source: str = "discord"


@dataclass(slots=True)
class _Session:
    channel_id: int
    muted: bool
    since: datetime  # joined voice (moving between channels keeps the session)
    role_ids: frozenset[int]


@dataclass
class VoiceTracker:
    """Voice sessions per guild and the last window ticked in each guild."""

    sessions: dict[int, dict[int, _Session]] = field(default_factory=dict)
    # guild -> (window length, last window ticked): a changed length starts afresh
    last_ticked: dict[int, tuple[int, int]] = field(default_factory=dict)

    def update(self, state: VoiceStateSeen) -> None:
        """Apply a voice-state update (join, leave, move, mute/unmute); bots are ignored."""
        if state.is_bot:
            return
        guild = self.sessions.setdefault(state.guild_id, {})
        if state.channel_id is None:
            guild.pop(state.member_id, None)
            if not guild:
                del self.sessions[state.guild_id]
            return
        current = guild.get(state.member_id)
        since = current.since if current else state.at
        guild[state.member_id] = _Session(state.channel_id, state.muted, since, state.role_ids)

    def reload_guild(self, guild_id: int, states: Iterable[VoiceStateSeen]) -> None:
        """Replace a guild's sessions with who is in voice now (start-up, reconnect); members
        already tracked keep the start of their session."""
        previous = self.sessions.pop(guild_id, {})
        for state in states:
            if state.channel_id is None or state.is_bot:
                continue
            self.update(state)
            if state.member_id in previous:
                self.sessions[guild_id][state.member_id].since = previous[state.member_id].since

    def roles_changed(self, guild_id: int, member_id: int, role_ids: frozenset[int]) -> None:
        """A tracked member's roles changed (they feed the ledger's multipliers)."""
        session = self.sessions.get(guild_id, {}).get(member_id)
        if session is not None:
            session.role_ids = role_ids

    def forget_guild(self, guild_id: int) -> None:
        """Drop a guild (the bot left it, or its voice states are about to be reloaded)."""
        self.sessions.pop(guild_id, None)

    def guilds(self) -> list[int]:
        """Guilds with anyone in voice."""
        return list(self.sessions)

    def unmuted_humans(self, guild_id: int) -> Counter[int]:
        """Unmuted humans per voice channel of a guild."""
        return Counter(
            s.channel_id for s in self.sessions.get(guild_id, {}).values() if not s.muted
        )

    def due(
        self,
        guild_id: int,
        now: datetime,
        tick_seconds: int,
        min_humans: int,
        source: str = "discord",
    ) -> list[VoiceTickDue]:
        """The ticks of the last finished window, once per window (then [] until the next).

        Windows missed while nobody asked (a stalled scheduler) are not back-filled: who was
        in voice then is not known.
        """
        window = window_index(now, tick_seconds) - 1
        length, last = self.last_ticked.get(guild_id, (tick_seconds, -1))
        if window < 0 or (length == tick_seconds and last >= window):
            return []
        self.last_ticked[guild_id] = (tick_seconds, window)
        start = window_start(window, tick_seconds)
        counts = self.unmuted_humans(guild_id)
        return [
            VoiceTickDue(
                guild_id=guild_id,
                member_id=member_id,
                channel_id=session.channel_id,
                unmuted_humans=counts[session.channel_id],
                tick_index=window,
                at=now,
                role_ids=session.role_ids,
                source=source,
            )
            for member_id, session in sorted(self.sessions.get(guild_id, {}).items())
            if session.since <= start and counts[session.channel_id] >= min_humans
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_index(at: datetime, tick_seconds: int) -> int:
    """The window containing `at` (windows of `tick_seconds` counted from the Unix epoch)."""
    return int((at - _EPOCH).total_seconds()) // max(1, tick_seconds)


def window_start(index: int, tick_seconds: int) -> datetime:
    """When window `index` starts."""
    return _EPOCH + timedelta(seconds=index * max(1, tick_seconds))
