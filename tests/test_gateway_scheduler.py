"""Scheduled jobs, called directly with a fixed clock: each is idempotent, also across two
instances of the bot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gateway.scheduler import ScheduledJobs, build_scheduler
from gateway.voice import VoiceStateSeen, VoiceTracker
from ledger import commands as cmd
from projections import catch_up
from tests.fix_db import LedgerEnv
from tests.fix_gateway_fakes import running_services

G = 6161
NOW = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
MODERATOR = cmd.Actor(1, is_moderator=True)


def warn(env: LedgerEnv, member: int, at: datetime, n: int) -> None:
    env.run(
        env.ledger.execute(
            cmd.IssueWarning(
                guild_id=G,
                command_id=f"w{n}",
                member_id=member,
                actor=MODERATOR,
                reason="spam",
                at=at,
            )
        )
    )


def count(env: LedgerEnv, type_name: str) -> int:
    rows = env.sql("SELECT count(*) FROM events WHERE guild_id = %s AND type = %s", (G, type_name))
    return int(rows[0][0])


def test_warning_expiry_is_idempotent_across_runs_and_instances(env: LedgerEnv) -> None:
    warn(env, 20, NOW - timedelta(days=31), 1)  # expired a day ago (30-day default)
    warn(env, 21, NOW - timedelta(days=29), 2)  # still active
    env.run(catch_up(env.store.pool, ["moderation"]))

    async def scenario() -> None:
        async with running_services(env) as services:
            first = ScheduledJobs(services, VoiceTracker(), lambda: [G])
            second = ScheduledJobs(services, VoiceTracker(), lambda: [G])
            await asyncio.gather(first.expire_warnings(NOW), second.expire_warnings(NOW))
            await first.expire_warnings(NOW)  # the read table has not caught up: found again

    env.run(scenario())
    expired = env.sql(
        "SELECT stream, data->>'warning_id', meta->>'command_id' FROM events "
        "WHERE guild_id = %s AND type = 'warning_expired'",
        (G,),
    )
    assert expired == [(20, "w1", "expire:w1")]
    env.run(catch_up(env.store.pool, ["moderation"]))
    statuses = env.sql("SELECT warning_id, status FROM warnings ORDER BY warning_id")
    assert statuses == [("w1", "expired"), ("w2", "active")]


def tracker_with_two_in_voice() -> VoiceTracker:
    tracker = VoiceTracker()
    joined = NOW - timedelta(minutes=10)
    for member in (31, 32):
        tracker.update(VoiceStateSeen(G, member, 700, muted=False, at=joined))
    return tracker


def test_voice_ticks_are_idempotent_across_runs_and_instances(env: LedgerEnv) -> None:
    async def scenario() -> None:
        async with running_services(env) as services:
            mine = ScheduledJobs(services, tracker_with_two_in_voice(), lambda: [G])
            theirs = ScheduledJobs(services, tracker_with_two_in_voice(), lambda: [G])
            await mine.voice_ticks(NOW)
            assert await mine.voice_ticks(NOW + timedelta(seconds=30)) == []  # same window
            replayed = await theirs.voice_ticks(NOW + timedelta(seconds=45))
            assert [r.replayed for r in replayed if not isinstance(r, Exception)] == [True, True]
            await mine.voice_ticks(NOW + timedelta(minutes=2))  # the next window

    env.run(scenario())
    ticks = env.sql(
        "SELECT meta->>'command_id' FROM events WHERE guild_id = %s AND type = 'xp_granted' "
        "ORDER BY position",
        (G,),
    )
    window = int(NOW.timestamp()) // 120 - 1
    assert [t for (t,) in ticks] == [
        f"voice:{G}:31:{window}",
        f"voice:{G}:32:{window}",
        f"voice:{G}:31:{window + 1}",
        f"voice:{G}:32:{window + 1}",
    ]


def test_build_scheduler_registers_aligned_jobs(env: LedgerEnv) -> None:
    async def scenario() -> None:
        async with running_services(env) as services:
            scheduler = build_scheduler(services, VoiceTracker(), lambda: [G])
            scheduler.start(paused=True)
            try:
                jobs = {job.id: job for job in scheduler.get_jobs()}
                assert set(jobs) == {"voice_ticks", "expire_warnings"}
                for job, seconds in ((jobs["voice_ticks"], 30), (jobs["expire_warnings"], 300)):
                    assert job.max_instances == 1 and job.coalesce
                    assert job.trigger.interval == timedelta(seconds=seconds)
                    # every instance fires at the same moments: just after a window ends
                    assert int(job.next_run_time.timestamp()) % seconds == 1
            finally:
                scheduler.shutdown(wait=False)

    env.run(scenario())
