"""Scheduled jobs in the bot process (apscheduler 3.x, on the running asyncio loop).

Wiring (the bot's `setup_hook`, which runs on the loop)::

    scheduler = build_scheduler(services, listeners.voice, lambda: [g.id for g in bot.guilds])
    scheduler.start()
    ...
    scheduler.shutdown(wait=False)  # in close()

Jobs, each idempotent through deterministic command ids (two instances, or a job run twice,
append nothing more):

- `voice_ticks` (every `voice_poll_seconds`, default 30): for each guild with members in voice,
  the ticks of the last finished window of the guild's `voice_tick_seconds` (default 120),
  command id `voice:{guild}:{member}:{window}`.
- `expire_warnings` (every `warning_poll_seconds`, default 300): active warnings past their
  `expires_at`, from `projections.queries.warnings_due`, command id `expire:{warning_id}`.
  The read table trails the log, so a warning may be found again after it was expired: the
  ledger answers that command id from its record.

Not scheduled, because nothing needs it: period rollovers (leaderboard periods are keyed by the
event's time and chosen at read time, nothing rolls over), daily resets (the daily gift rule
uses the UTC day of the claim), multiplier expiry (multipliers last N games, not a time).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from gateway import handlers
from gateway.handlers import Result, WarningDue
from gateway.voice import VoiceTracker
from ledger.runtime import Services
from projections import queries

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Interval jobs fire at whole multiples of their interval since the epoch, plus this: voice
# windows have just ended when the voice job runs, on every instance alike.
_ALIGN = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1)
WARNINGS_PER_GUILD = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ScheduledJobs:
    """The jobs as plain coroutines (tests call them directly, with a fixed `now`)."""

    def __init__(
        self,
        services: Services,
        voice: VoiceTracker,
        guilds: Callable[[], Iterable[int]],
        *,
        clock: Clock = _utc_now,
        source: str = "scheduler",
    ) -> None:
        self.services = services
        self.voice = voice
        self.guilds = guilds
        self.clock = clock
        self.source = source

    async def voice_ticks(self, now: datetime | None = None) -> list[Result]:
        """Submit the voice ticks now due in every guild with members in voice."""
        now = now or self.clock()
        ticks = []
        for guild_id in self.voice.guilds():
            config = (await self.services.store.load(guild_id, [], [])).config
            ticks += self.voice.due(
                guild_id, now, config.voice_tick_seconds, config.voice_min_humans, self.source
            )
        return list(await asyncio.gather(*(handlers.voice_tick(self.services, t) for t in ticks)))

    async def expire_warnings(self, now: datetime | None = None) -> list[Result]:
        """Submit the expiry of every active warning past its expiry, guild by guild."""
        now = now or self.clock()
        results: list[Result] = []
        for guild_id in self.guilds():
            due = await queries.warnings_due(
                self.services.pool, guild_id, now, limit=WARNINGS_PER_GUILD
            )
            results += await asyncio.gather(
                *(
                    handlers.warning_due(
                        self.services,
                        WarningDue(guild_id, w.member_id, w.warning_id, now, self.source),
                    )
                    for w in due
                )
            )
        return results


async def _logged(name: str, job: Callable[[], object]) -> None:
    """Run a job; a failure is logged and the next run tries again."""
    try:
        result = job()
        if asyncio.iscoroutine(result):
            await result
    except Exception:
        log.exception("scheduled job %s failed", name)


def build_scheduler(
    services: Services,
    voice: VoiceTracker,
    guilds: Callable[[], Iterable[int]],
    *,
    voice_poll_seconds: int = 30,
    warning_poll_seconds: int = 300,
    jobs: ScheduledJobs | None = None,
) -> AsyncIOScheduler:
    """An unstarted scheduler on the running loop with the voice and warning jobs.

    Call from a coroutine (the bot's `setup_hook`); `start()` it there and `shutdown()` it on
    close. A run still going when the next is due is not doubled (one instance per job,
    missed runs coalesced). `jobs` replaces the default `ScheduledJobs(services, voice, guilds)`.
    """
    jobs = jobs or ScheduledJobs(services, voice, guilds)
    scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
    for name, job, seconds in (
        ("voice_ticks", jobs.voice_ticks, voice_poll_seconds),
        ("expire_warnings", jobs.expire_warnings, warning_poll_seconds),
    ):
        scheduler.add_job(
            _logged,
            IntervalTrigger(seconds=seconds, start_date=_ALIGN, timezone=UTC),
            args=(name, job),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=seconds,
            replace_existing=True,
        )
    return scheduler
