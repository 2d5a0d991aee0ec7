"""Listeners driven with fakes of discord.py objects; their effect is checked in the log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.invites import InviteTracker, InviteUses
from gateway.listeners import ListenersCog
from gateway.scheduler import ScheduledJobs
from gateway.simulation import MUSIC_BOT, SimulationConfig, SimulationReport, simulate
from gateway.voice import VoiceStateSeen, VoiceTracker
from ledger import commands as cmd
from ledger.runtime import Services
from tests.fix_db import LedgerEnv
from tests.fix_gateway_fakes import (
    FakeBot,
    FakeChannel,
    FakeGuild,
    FakeInvite,
    FakeMember,
    FakeMessage,
    FakeReaction,
    FakeRole,
    FakeVoiceState,
    running_services,
)

G = 4242
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def events(env: LedgerEnv, type_name: str) -> list[tuple[Any, ...]]:
    """(stream, command id, data) of the guild's events of one type, in position order."""
    return env.sql(
        "SELECT stream, meta->>'command_id', data FROM events "
        "WHERE guild_id = %s AND type = %s ORDER BY position",
        (G, type_name),
    )


def cog_for(services: Services, guild: FakeGuild) -> ListenersCog:
    return ListenersCog(FakeBot([guild]), services)


def test_messages_from_bots_webhooks_dms_and_system_are_not_forwarded(env: LedgerEnv) -> None:
    guild = FakeGuild(G)
    channel = FakeChannel(77)
    human = FakeMember(10, guild, roles=[FakeRole(5)])
    bot = FakeMember(11, guild, bot=True)

    async def scenario() -> None:
        async with running_services(env) as services:
            cog = cog_for(services, guild)
            await cog.on_message(FakeMessage(1001, bot, channel, guild))
            await cog.on_message(FakeMessage(1002, human, channel, guild, webhook_id=9))
            await cog.on_message(FakeMessage(1003, human, channel, None))
            await cog.on_message(FakeMessage(1004, human, channel, guild, system=True))
            await cog.on_message(FakeMessage(1005, human, channel, guild))
            # the same message seen by a second bot instance (or redelivered) grants nothing more
            await cog_for(services, guild).on_message(FakeMessage(1005, human, channel, guild))

    env.run(scenario())
    granted = events(env, "xp_granted")
    assert [(stream, command_id) for stream, command_id, _ in granted] == [(10, "1005")]
    assert granted[0][2]["channel_id"] == 77 and granted[0][2]["ref_id"] == 1005
    assert env.sql("SELECT count(*) FROM events WHERE stream = 11")[0][0] == 0


def test_reactions_credit_the_author_capped_never_self_or_bots(env: LedgerEnv) -> None:
    guild = FakeGuild(G)
    author = FakeMember(20, guild)
    reactors = [FakeMember(100 + n, guild) for n in range(12)]
    bot = FakeMember(30, guild, bot=True)
    env.run(env.ledger.execute(_config("reaction_cap_per_message", 10)))

    def reaction(member: FakeMember, message: int = 555, guild_id: int | None = G) -> FakeReaction:
        return FakeReaction(guild_id, 77, message, member.id, author.id, member)

    async def scenario() -> None:
        async with running_services(env) as services:
            cog = cog_for(services, guild)
            await cog.on_raw_reaction_add(reaction(author))
            await cog.on_raw_reaction_add(reaction(bot))
            await cog.on_raw_reaction_add(reaction(reactors[0], guild_id=None))
            for member in reactors:
                await cog.on_raw_reaction_add(reaction(member))
            # a second emoji by the same member is the same command
            await cog.on_raw_reaction_add(reaction(reactors[0]))
            # a reaction to a bot's message: no XP to the bot
            to_bot = FakeReaction(G, 77, 556, reactors[1].id, bot.id, reactors[1])
            await cog.on_raw_reaction_add(to_bot)

    env.run(scenario())
    granted = events(env, "xp_granted")
    assert [stream for stream, _, _ in granted] == [author.id] * 10  # capped at 10
    assert {data["actor_id"] for _, _, data in granted} == {m.id for m in reactors[:10]}
    assert {command_id for _, command_id, _ in granted} == {
        f"react:555:{m.id}" for m in reactors[:10]
    }


def test_voice_ticks_only_with_two_unmuted_humans(env: LedgerEnv) -> None:
    guild = FakeGuild(G)
    lounge, quiet, muted_room = FakeChannel(301), FakeChannel(302), FakeChannel(303)
    a, b, c, d, e = (FakeMember(n, guild) for n in (41, 42, 43, 44, 45))
    music_bot = FakeMember(49, guild, bot=True)

    async def scenario() -> None:
        async with running_services(env) as services:
            cog = cog_for(services, guild)
            joins = [
                (a, FakeVoiceState(lounge)),
                (b, FakeVoiceState(lounge)),
                (c, FakeVoiceState(quiet)),  # alone with a bot: bots do not count
                (music_bot, FakeVoiceState(quiet)),
                (d, FakeVoiceState(muted_room, self_mute=True)),
                (e, FakeVoiceState(muted_room)),  # one unmuted human is not enough
            ]
            for member, state in joins:
                await cog.on_voice_state_update(member, FakeVoiceState(), state)
            jobs = ScheduledJobs(services, cog.voice, lambda: [G])
            later = datetime.now(UTC) + timedelta(minutes=6)
            await jobs.voice_ticks(later)
            await jobs.voice_ticks(later)  # the same window again: nothing more
            # b deafens: the lounge drops to one unmuted human for the next window
            await cog.on_voice_state_update(
                b,
                FakeVoiceState(lounge),
                FakeVoiceState(lounge, self_deaf=True),
            )
            await jobs.voice_ticks(later + timedelta(minutes=2))

    env.run(scenario())
    ticks = events(env, "xp_granted")
    assert sorted(stream for stream, _, _ in ticks) == [a.id, b.id]
    assert all(data["source"] == "voice" and data["channel_id"] == 301 for _, _, data in ticks)
    assert all(command_id.startswith(f"voice:{G}:") for _, command_id, _ in ticks)


def test_voice_tracker_sessions_and_windows() -> None:
    tracker = VoiceTracker()

    def seen(member: int, channel: int | None, at: datetime, muted: bool = False) -> None:
        tracker.update(VoiceStateSeen(G, member, channel, muted, at))

    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a multiple of 120 s since the epoch
    seen(1, 7, start)
    seen(2, 7, start)
    seen(3, 7, start + timedelta(seconds=30))  # joined mid-window: not ticked for it
    seen(1, 8, start + timedelta(seconds=60))  # a move keeps the session's start
    seen(1, 7, start + timedelta(seconds=90))
    due = tracker.due(G, start + timedelta(seconds=121), 120, 2)
    assert [(t.member_id, t.unmuted_humans) for t in due] == [(1, 3), (2, 3)]
    assert tracker.due(G, start + timedelta(seconds=200), 120, 2) == []
    seen(2, None, start + timedelta(seconds=210))  # leaves
    due = tracker.due(G, start + timedelta(seconds=241), 120, 2)
    assert [t.member_id for t in due] == [1, 3]
    assert {t.tick_index for t in due} == {int(start.timestamp()) // 120 + 1}


def test_member_join_through_an_invite_rewards_both_once(env: LedgerEnv) -> None:
    guild = FakeGuild(G)
    inviter = FakeMember(60, guild)
    other = FakeMember(61, guild)
    newcomer = FakeMember(70, guild)
    guild.current_invites = [
        FakeInvite("abc", inviter, uses=3, guild=guild),
        FakeInvite("xyz", other, uses=1, guild=guild),
    ]

    async def scenario() -> None:
        async with running_services(env) as services:
            cog = cog_for(services, guild)
            await cog.on_ready()  # caches the invites and their uses
            guild.current_invites[0] = FakeInvite("abc", inviter, uses=4, guild=guild)
            await cog.on_member_join(newcomer)
            # a second instance (cold invite cache) sees the same join: nothing more
            await cog_for(services, guild).on_member_join(newcomer)
            await cog.on_member_join(FakeMember(71, guild, bot=True))

    env.run(scenario())
    rewards = events(env, "invite_rewarded")
    assert sorted((stream, data["side"]) for stream, _, data in rewards) == [
        (60, "inviter"),
        (70, "invitee"),
    ]
    assert {command_id for _, command_id, _ in rewards} == {f"invite:{G}:70"}
    joined = events(env, "member_joined")
    assert sorted(stream for stream, _, _ in joined) == [60, 70]
    assert env.sql("SELECT count(*) FROM events WHERE stream = 71")[0][0] == 0


def test_invite_tracker_diffs() -> None:
    tracker = InviteTracker()
    tracker.load(G, [InviteUses("a", 1, 0), InviteUses("b", 2, 5)])
    # two joins raced through "b": each resolves to its inviter, one use at a time
    assert tracker.resolve(G, [InviteUses("a", 1, 0), InviteUses("b", 2, 7)]) == 2
    assert tracker.resolve(G, [InviteUses("a", 1, 0), InviteUses("b", 2, 7)]) == 2
    assert tracker.resolve(G, [InviteUses("a", 1, 0), InviteUses("b", 2, 7)]) is None
    # a single-use invite is deleted when used, possibly before the join arrives
    tracker.created(G, InviteUses("solo", 4, 0, 1))
    tracker.deleted(G, "solo")
    assert tracker.resolve(G, [InviteUses("a", 1, 0), InviteUses("b", 2, 7)]) == 4
    # two different invites went up: ambiguous, nobody is rewarded
    assert tracker.resolve(G, [InviteUses("a", 1, 1), InviteUses("b", 2, 8)]) is None
    assert tracker.resolve(G, [InviteUses("a", 1, 1), InviteUses("b", 2, 8)]) is None


def _config(key: str, value: object) -> cmd.ChangeConfig:
    return cmd.ChangeConfig(
        guild_id=G,
        command_id=f"config-{key}",
        actor=cmd.Actor(1, is_moderator=True, is_admin=True),
        key=key,
        value=value,
        at=T0,
    )


def test_demo_traffic_goes_through_the_handlers(env: LedgerEnv) -> None:
    config = SimulationConfig(guild_id=G, members=40, events=2500, seed=3)

    async def scenario() -> SimulationReport:
        async with running_services(env) as services:
            return await simulate(services, [services.batcher], config)

    report = env.run(scenario())
    assert report.events >= 2500 and report.ignored > 0
    kinds = env.sql(
        "SELECT DISTINCT split_part(meta->>'command_id', ':', 1) FROM events "
        "WHERE guild_id = %s AND type IN ('xp_granted', 'member_joined', 'invite_rewarded')",
        (G,),
    )
    prefixes = {kind for (kind,) in kinds}
    # handler ids: message snowflakes, reactions, voice ticks, joins and invites
    assert {"react", "voice", "join", "invite"} <= prefixes
    assert any(prefix.isdigit() for prefix in prefixes)
    assert env.sql(
        "SELECT count(*) FROM events WHERE guild_id = %s AND stream = %s", (G, MUSIC_BOT)
    ) == [(0,)]
    inviters = env.sql(
        "SELECT count(*) FROM events WHERE guild_id = %s AND type = 'invite_rewarded' "
        "AND data->>'side' = 'inviter'",
        (G,),
    )
    assert inviters[0][0] > 0
