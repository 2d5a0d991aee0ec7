"""Unit tests of the economy's rules: pure `decide`, no database (DESIGN §4)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from ledger import commands as cmd
from ledger import events as ev
from ledger.commands import Actor
from ledger.errors import (
    CooldownActive,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    LedgerError,
    NotPermitted,
    UnknownItem,
    UnknownMember,
)
from ledger.guild_config import DEFAULT_CONFIG, GuildConfig, evolve_config
from ledger.levels import level_for_xp, total_xp_for_level, xp_to_next
from ledger.member import REACTION_WINDOW, ActiveMultiplier, ActiveWarning, MemberState, fold
from ledger.rules import Decision, decide

G = 4242
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ADMIN = Actor(900, is_admin=True)
MOD = Actor(901, is_moderator=True)
PLAIN = Actor(902)
ALICE, BOB, CAROL = 11, 12, 13
CHANNEL, OTHER_CHANNEL = 500, 501
_ids = itertools.count()


def cid() -> str:
    return f"cmd-{next(_ids)}"


def run(
    command: cmd.AnyCommand,
    states: Mapping[int, MemberState] | None = None,
    config: GuildConfig = DEFAULT_CONFIG,
    originals: Sequence[ev.Recorded] = (),
) -> Decision:
    return decide(command, config, states or {}, originals)


def types(decision: Decision) -> list[str]:
    return [ev.event_type(e) for e in decision.events]


def member(balance: int = 25, **changes: object) -> MemberState:
    """A joined member's state with `balance` LC (and any other field overridden)."""
    return msgspec.structs.replace(
        MemberState(joined=True, balance=balance, xp=0, level=0), **changes
    )


def only(decision: Decision, kind: type[ev.Event]) -> list[ev.Event]:
    return [e for e in decision.events if isinstance(e, kind)]


def message(
    member_id: int = ALICE,
    at: datetime = T0,
    entropy: int = 0,
    channel_id: int = CHANNEL,
    role_ids: frozenset[int] = frozenset(),
) -> cmd.GrantMessageXp:
    return cmd.GrantMessageXp(
        guild_id=G,
        command_id=cid(),
        member_id=member_id,
        at=at,
        channel_id=channel_id,
        message_id=next(_ids) + 10_000,
        role_ids=role_ids,
        entropy=entropy,
    )


def recorded(decision: Decision, first_position: int = 1) -> list[ev.Recorded]:
    """A decision's events as if appended at consecutive positions."""
    versions: dict[int, int] = {}
    out = []
    for offset, event in enumerate(decision.events):
        versions[event.member_id] = versions.get(event.member_id, 0) + 1
        out.append(
            ev.Recorded(
                position=first_position + offset,
                tx=1,
                guild_id=G,
                stream=event.member_id,
                version=versions[event.member_id],
                event=event,
                meta=ev.Meta(command_id="original"),
                recorded_at=T0,
            )
        )
    return out


# --- first interaction ---------------------------------------------------------------------------


def test_join_opens_wallet_with_starting_balance_once() -> None:
    first = run(cmd.Join(guild_id=G, command_id=cid(), member_id=ALICE, at=T0))
    assert types(first) == ["member_joined"]
    assert first.states[ALICE].balance == 25 and first.states[ALICE].joined
    again = run(cmd.Join(guild_id=G, command_id=cid(), member_id=ALICE, at=T0), first.states)
    assert again.events == [] and again.states[ALICE].balance == 25


def test_starting_balance_follows_config_and_any_first_command_opens_wallet() -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, starting_balance=70)
    decision = run(
        cmd.Transfer(guild_id=G, command_id=cid(), from_id=ALICE, to_id=BOB, amount=5, at=T0),
        config=config,
    )
    joins = only(decision, ev.MemberJoined)
    assert [(e.member_id, e.starting_balance) for e in joins] == [(ALICE, 70), (BOB, 70)]
    assert decision.states[ALICE].balance == 65 and decision.states[BOB].balance == 75


# --- message XP ----------------------------------------------------------------------------------


def test_message_xp_roll_is_15_to_25_from_entropy_and_recorded() -> None:
    rolls = set()
    for entropy in range(40):
        decision = run(message(entropy=entropy))
        (grant,) = only(decision, ev.XpGranted)
        assert isinstance(grant, ev.XpGranted)
        assert grant.source == "message" and grant.multiplier_pct == 100
        assert 15 <= grant.base <= 25 and grant.xp == grant.base
        assert grant.base == 15 + entropy % 11  # the roll is a pure function of recorded entropy
        assert decision.states[ALICE].xp == grant.xp
        rolls.add(grant.base)
    assert rolls == set(range(15, 26))


def test_message_xp_same_command_decides_the_same_roll() -> None:
    command = message(entropy=123_456_789)
    assert run(command).events == run(command).events


def test_message_xp_cooldown_is_60_seconds() -> None:
    states = run(message(at=T0)).states
    blocked = run(message(at=T0 + timedelta(seconds=59)), states)
    assert blocked.events == [] and blocked.note == "cooldown"
    allowed = run(message(at=T0 + timedelta(seconds=60)), states)
    assert types(allowed)[0] == "xp_granted"
    assert allowed.states[ALICE].last_message_xp_at == T0 + timedelta(seconds=60)


def test_message_xp_cooldown_follows_config() -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, message_cooldown_seconds=10)
    states = run(message(at=T0), config=config).states
    assert run(message(at=T0 + timedelta(seconds=10)), states, config).events


def test_message_xp_not_in_no_xp_channels_or_roles() -> None:
    config = msgspec.structs.replace(
        DEFAULT_CONFIG, no_xp_channels=frozenset({CHANNEL}), no_xp_roles=frozenset({77})
    )
    in_channel = run(message(channel_id=CHANNEL), config=config)
    assert in_channel.events == [] and in_channel.note == "no_xp_channel"
    with_role = run(message(channel_id=OTHER_CHANNEL, role_ids=frozenset({5, 77})), config=config)
    assert with_role.events == [] and with_role.note == "no_xp_role"
    elsewhere = run(message(channel_id=OTHER_CHANNEL, role_ids=frozenset({5})), config=config)
    assert only(elsewhere, ev.XpGranted)


def test_message_xp_multipliers_guild_role_channel() -> None:
    config = msgspec.structs.replace(
        DEFAULT_CONFIG,
        guild_multiplier_pct=150,
        role_multipliers_pct={1: 200, 2: 300},
        channel_multipliers_pct={CHANNEL: 50},
    )
    # entropy 5 -> roll 20; 150% guild * 50% channel * best role 300% = 225%
    decision = run(message(entropy=5, role_ids=frozenset({1, 2})), config=config)
    (grant,) = only(decision, ev.XpGranted)
    assert isinstance(grant, ev.XpGranted)
    assert (grant.base, grant.multiplier_pct, grant.xp) == (20, 225, 45)
    plain_channel = run(message(entropy=5, channel_id=OTHER_CHANNEL), config=config)
    (grant,) = only(plain_channel, ev.XpGranted)
    assert isinstance(grant, ev.XpGranted)
    assert (grant.multiplier_pct, grant.xp) == (150, 30)


# --- voice ---------------------------------------------------------------------------------------


def voice(
    humans: int,
    states: Mapping[int, MemberState] | None = None,
    config: GuildConfig = DEFAULT_CONFIG,
) -> Decision:
    command = cmd.VoiceTick(
        guild_id=G,
        command_id=cid(),
        member_id=ALICE,
        at=T0,
        channel_id=CHANNEL,
        unmuted_humans=humans,
    )
    return run(command, states, config)


def test_voice_tick_needs_two_unmuted_humans() -> None:
    alone = voice(1)
    assert alone.events == [] and alone.note == "not_enough_listeners"
    pair = voice(2)
    grants = only(pair, ev.XpGranted)
    assert len(grants) == 1
    grant = grants[0]
    assert isinstance(grant, ev.XpGranted)
    assert (grant.source, grant.xp, grant.seconds) == ("voice", 10, 120)
    assert pair.states[ALICE].voice_seconds == 120


def test_voice_hourly_bonus_when_crossing_a_full_hour() -> None:
    before_hour = {ALICE: member(voice_seconds=3600 - 240)}
    no_bonus = voice(3, before_hour)
    assert [e.source for e in only(no_bonus, ev.XpGranted)] == ["voice"]  # type: ignore[attr-defined]
    crossing = voice(3, {ALICE: member(voice_seconds=3600 - 120)})
    sources = [e.source for e in only(crossing, ev.XpGranted)]  # type: ignore[attr-defined]
    assert sources == ["voice", "voice_bonus"]
    assert crossing.value == 10 + 50
    assert crossing.states[ALICE].xp == 60
    # The next tick within the same hour earns no bonus again.
    after = voice(3, crossing.states)
    assert [e.source for e in only(after, ev.XpGranted)] == ["voice"]  # type: ignore[attr-defined]


def test_voice_thirty_ticks_from_zero_earn_exactly_one_bonus() -> None:
    states: Mapping[int, MemberState] = {}
    bonuses = 0
    for _ in range(30):
        decision = voice(2, states)
        bonuses += sum(e.source == "voice_bonus" for e in only(decision, ev.XpGranted))  # type: ignore[attr-defined]
        states = decision.states
    assert bonuses == 1
    assert states[ALICE].voice_seconds == 3600
    assert states[ALICE].xp == 30 * 10 + 50


def test_voice_multiplier_applies() -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, channel_multipliers_pct={CHANNEL: 200})
    grant = only(voice(2, config=config), ev.XpGranted)[0]
    assert isinstance(grant, ev.XpGranted)
    assert (grant.base, grant.multiplier_pct, grant.xp) == (10, 200, 20)


# --- reactions -----------------------------------------------------------------------------------


def reaction(reactor: int, message_id: int = 7000, author: int = ALICE) -> cmd.ReactionReceived:
    return cmd.ReactionReceived(
        guild_id=G,
        command_id=cid(),
        author_id=author,
        reactor_id=reactor,
        message_id=message_id,
        channel_id=CHANNEL,
        at=T0,
    )


def test_reaction_xp_goes_to_the_author() -> None:
    decision = run(reaction(BOB))
    assert {e.member_id for e in decision.events} == {ALICE}
    (grant,) = only(decision, ev.XpGranted)
    assert isinstance(grant, ev.XpGranted)
    assert (grant.source, grant.xp, grant.ref_id, grant.actor_id) == ("reaction", 5, 7000, BOB)
    assert BOB not in decision.states


def test_reaction_no_self_reaction() -> None:
    decision = run(reaction(ALICE))
    assert decision.events == [] and decision.note == "self_reaction"


def test_reaction_xp_is_capped_per_message() -> None:
    states: Mapping[int, MemberState] = {}
    granted = 0
    for reactor in range(100, 115):
        decision = run(reaction(reactor), states)
        states = decision.states
        granted += bool(decision.events)
    assert granted == DEFAULT_CONFIG.reaction_cap_per_message == 10
    assert states[ALICE].xp == 50
    capped = run(reaction(999), states)
    assert capped.note == "reaction_cap"
    # Another message of the same author has its own cap.
    assert run(reaction(999, message_id=7001), states).events


def test_reaction_cap_holds_for_older_messages_once_the_window_is_full() -> None:
    """Regression: a reaction to a message older than a full window of remembered messages was
    counted and evicted at once, so that message's cap never engaged."""
    states: Mapping[int, MemberState] = {}
    for offset in range(REACTION_WINDOW):
        states = run(reaction(BOB, message_id=9000 + offset), states).states
    granted = 0
    for reactor in range(100, 120):
        decision = run(reaction(reactor, message_id=10), states)
        states = decision.states
        granted += bool(decision.events)
    assert granted <= DEFAULT_CONFIG.reaction_cap_per_message


# --- games ---------------------------------------------------------------------------------------


def game(won: bool, bet: int = 0, payout: int = 0, member_id: int = ALICE) -> cmd.RecordGame:
    return cmd.RecordGame(
        guild_id=G,
        command_id=cid(),
        member_id=member_id,
        at=T0,
        game="coinflip",
        won=won,
        bet=bet,
        payout=payout,
    )


def test_game_xp_15_for_a_win_5_for_a_loss() -> None:
    win = run(game(True), {ALICE: member()})
    loss = run(game(False), {ALICE: member()})
    assert win.value == 15 and win.states[ALICE].xp == 15
    assert loss.value == 5 and loss.states[ALICE].xp == 5


def test_game_bet_burned_and_payout_minted() -> None:
    won = run(game(True, bet=20, payout=50), {ALICE: member(100)})
    (played,) = only(won, ev.GamePlayed)
    assert isinstance(played, ev.GamePlayed)
    assert (played.bet, played.payout) == (20, 50)
    assert won.states[ALICE].balance == 130
    lost = run(game(False, bet=100), {ALICE: member(100)})
    assert lost.states[ALICE].balance == 0


def test_game_bet_above_balance_refused() -> None:
    with pytest.raises(InsufficientFunds, match="100"):
        run(game(True, bet=101, payout=300), {ALICE: member(100)})
    # A new member bets against the starting balance they get on first interaction.
    with pytest.raises(InsufficientFunds):
        run(game(False, bet=26))
    assert run(game(False, bet=25)).states[ALICE].balance == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, DEFAULT_CONFIG.max_amount + 1])
def test_game_bad_bet_refused(bad: object) -> None:
    with pytest.raises(InvalidInput, match="Bet"):
        run(game(True, bet=bad), {ALICE: member(10**12)})  # type: ignore[arg-type]


def test_game_item_multiplier_consumed_per_game_and_expires_after_n_games() -> None:
    states: Mapping[int, MemberState] = {
        ALICE: member(items={"x2": 1}),
    }
    activated = run(
        cmd.UseItem(guild_id=G, command_id=cid(), member_id=ALICE, item="x2", at=T0), states
    )
    states = activated.states
    assert states[ALICE].multiplier == ActiveMultiplier("x2", 200, 5)
    assert "x2" not in states[ALICE].items
    xps = []
    for _ in range(6):
        decision = run(game(True), states)
        (played,) = only(decision, ev.GamePlayed)
        assert isinstance(played, ev.GamePlayed)
        xps.append((played.multiplier_pct, played.xp))
        states = decision.states
    assert xps == [(200, 30)] * 5 + [(100, 15)]
    assert states[ALICE].multiplier is None


# --- daily gift ----------------------------------------------------------------------------------


def daily(at: datetime, member_id: int = ALICE) -> cmd.ClaimDaily:
    return cmd.ClaimDaily(guild_id=G, command_id=cid(), member_id=member_id, at=at)


def test_daily_first_claim_opens_wallet_and_pays() -> None:
    decision = run(daily(T0))
    assert types(decision) == ["member_joined", "daily_claimed"]
    (claimed,) = only(decision, ev.DailyClaimed)
    assert isinstance(claimed, ev.DailyClaimed)
    assert (claimed.streak, claimed.amount, claimed.day) == (1, 50, T0.date().toordinal())
    assert decision.states[ALICE].balance == 75


def test_daily_same_utc_day_refused_with_cooldown() -> None:
    states = run(daily(T0)).states
    with pytest.raises(CooldownActive) as caught:
        run(daily(T0.replace(hour=23, minute=59)), states)
    assert caught.value.retry_after == 60
    late = run(daily(T0.replace(hour=23, minute=59)))
    with pytest.raises(CooldownActive) as caught:
        run(daily(T0.replace(hour=23, minute=59, second=30)), late.states)
    assert caught.value.retry_after == 30
    # Just after midnight UTC it is a new day.
    assert run(daily(T0.replace(hour=0) + timedelta(days=1)), states).events


def test_daily_consecutive_days_grow_the_streak_up_to_the_cap() -> None:
    states: Mapping[int, MemberState] = {}
    amounts = []
    for day in range(10):
        decision = run(daily(T0 + timedelta(days=day)), states)
        (claimed,) = only(decision, ev.DailyClaimed)
        assert isinstance(claimed, ev.DailyClaimed)
        assert claimed.streak == day + 1
        amounts.append(claimed.amount)
        states = decision.states
    # 50 + 10 per day of streak, the bonus capped after 7 extra days.
    assert amounts == [50, 60, 70, 80, 90, 100, 110, 120, 120, 120]
    assert states[ALICE].balance == 25 + sum(amounts)


def test_daily_gap_resets_the_streak() -> None:
    states = run(daily(T0)).states
    states = run(daily(T0 + timedelta(days=1)), states).states
    assert states[ALICE].daily_streak == 2
    after_gap = run(daily(T0 + timedelta(days=3)), states)
    (claimed,) = only(after_gap, ev.DailyClaimed)
    assert isinstance(claimed, ev.DailyClaimed)
    assert (claimed.streak, claimed.amount) == (1, 50)


def test_daily_day_is_the_utc_day_whatever_the_timezone_of_at() -> None:
    """Regression: the day was `at.date()` in `at`'s own offset. 23:00 UTC and 23:30 UTC are the
    same UTC day; written as 01:30+02:00 the second reading fell on the next local date."""
    states = run(daily(datetime(2024, 1, 1, 23, 0, tzinfo=UTC))).states
    same_utc_day = datetime(2024, 1, 1, 23, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    with pytest.raises(CooldownActive):
        run(daily(same_utc_day), states)


# --- invites -------------------------------------------------------------------------------------


def invite(inviter: int, invitee: int) -> cmd.RewardInvite:
    return cmd.RewardInvite(
        guild_id=G, command_id=cid(), inviter_id=inviter, invitee_id=invitee, at=T0
    )


def test_invite_rewards_both_sides() -> None:
    decision = run(invite(ALICE, BOB), {ALICE: member(10)})
    rewards = {e.member_id: e for e in only(decision, ev.InviteRewarded)}
    assert rewards[ALICE].side == "inviter" and rewards[ALICE].amount == 100  # type: ignore[attr-defined]
    assert rewards[BOB].side == "invitee" and rewards[BOB].amount == 50  # type: ignore[attr-defined]
    assert decision.states[ALICE].balance == 110
    assert decision.states[BOB].balance == 25 + 50


def test_invite_rewarded_once_per_invitee() -> None:
    states = run(invite(ALICE, BOB)).states
    again = run(invite(CAROL, BOB), states)
    assert again.events == [] and again.note == "already_rewarded"
    same_pair = run(invite(ALICE, BOB), states)
    assert same_pair.events == []


def test_invite_no_self_invite() -> None:
    with pytest.raises(InvalidInput, match="themselves"):
        run(invite(ALICE, ALICE))


# --- transfers -----------------------------------------------------------------------------------


def transfer(amount: object, from_id: int = ALICE, to_id: int = BOB) -> cmd.Transfer:
    return cmd.Transfer(
        guild_id=G,
        command_id=cid(),
        from_id=from_id,
        to_id=to_id,
        amount=amount,  # type: ignore[arg-type]
        at=T0,
    )


def test_transfer_moves_both_halves_in_one_decision() -> None:
    decision = run(transfer(30), {ALICE: member(100), BOB: member(5)})
    assert types(decision) == ["transfer_sent", "transfer_received"]
    sent, received = decision.events
    assert isinstance(sent, ev.TransferSent) and isinstance(received, ev.TransferReceived)
    assert (sent.member_id, sent.to_id, sent.amount) == (ALICE, BOB, 30)
    assert (received.member_id, received.from_id, received.amount) == (BOB, ALICE, 30)
    assert decision.states[ALICE].balance == 70 and decision.states[BOB].balance == 35


def test_transfer_no_overdraft() -> None:
    states = {ALICE: member(100), BOB: member(5)}
    with pytest.raises(InsufficientFunds, match="100 LC"):
        run(transfer(101), states)
    assert run(transfer(100), states).states[ALICE].balance == 0


def test_transfer_no_self_transfer() -> None:
    with pytest.raises(InvalidInput, match="yourself"):
        run(transfer(1, ALICE, ALICE), {ALICE: member(100)})


@pytest.mark.parametrize(
    "amount",
    [0, -1, -(10**6), True, False, 1.0, 2.5, "10", None, DEFAULT_CONFIG.max_amount + 1],
)
def test_transfer_invalid_amounts(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        run(transfer(amount), {ALICE: member(10**13), BOB: member(0)})


def test_transfer_at_max_amount_allowed() -> None:
    maximum = DEFAULT_CONFIG.max_amount
    decision = run(transfer(maximum), {ALICE: member(maximum), BOB: member(0)})
    assert decision.states[BOB].balance == maximum


def test_transfer_cannot_push_recipient_above_max_balance() -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, max_balance=1000)
    with pytest.raises(InvalidAmount, match="maximum balance"):
        run(transfer(10), {ALICE: member(100), BOB: member(995)}, config)


# --- admin grant / take --------------------------------------------------------------------------


def grant(actor: Actor = ADMIN, lc: object = 0, xp: object = 0) -> cmd.AdminGrant:
    return cmd.AdminGrant(
        guild_id=G,
        command_id=cid(),
        member_id=ALICE,
        actor=actor,
        lc=lc,  # type: ignore[arg-type]
        xp=xp,  # type: ignore[arg-type]
        reason="event prize",
        at=T0,
    )


def take(actor: Actor = ADMIN, lc: object = 10) -> cmd.AdminTake:
    return cmd.AdminTake(
        guild_id=G,
        command_id=cid(),
        member_id=ALICE,
        actor=actor,
        lc=lc,
        at=T0,  # type: ignore[arg-type]
    )


def test_admin_grant_mints_lc_and_xp_within_bounds() -> None:
    decision = run(
        grant(lc=DEFAULT_CONFIG.admin_grant_max_lc, xp=DEFAULT_CONFIG.admin_grant_max_xp)
    )
    (minted,) = only(decision, ev.LcMinted)
    assert isinstance(minted, ev.LcMinted)
    assert (minted.amount, minted.reason, minted.actor_id, minted.note) == (
        1_000_000,
        "admin",
        ADMIN.user_id,
        "event prize",
    )
    assert decision.states[ALICE].balance == 25 + 1_000_000
    assert decision.states[ALICE].xp == 100_000


@pytest.mark.parametrize(
    ("lc", "xp"),
    [
        (DEFAULT_CONFIG.admin_grant_max_lc + 1, 0),
        (0, DEFAULT_CONFIG.admin_grant_max_xp + 1),
        (-5, 0),
        (0, -5),
        (0, 0),
        (1.5, 0),
    ],
)
def test_admin_grant_outside_bounds_refused(lc: object, xp: object) -> None:
    with pytest.raises(InvalidAmount):
        run(grant(lc=lc, xp=xp))


def test_admin_grant_bounds_follow_config() -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, admin_grant_max_lc=100)
    assert run(grant(lc=100), config=config).events
    with pytest.raises(InvalidAmount, match="100"):
        run(grant(lc=101), config=config)


@pytest.mark.parametrize("actor", [PLAIN, MOD])
def test_admin_grant_and_take_need_an_admin(actor: Actor) -> None:
    with pytest.raises(NotPermitted):
        run(grant(actor=actor, lc=10))
    with pytest.raises(NotPermitted):
        run(take(actor=actor), {ALICE: member(100)})


def test_admin_take_burns_within_balance() -> None:
    decision = run(take(lc=40), {ALICE: member(100)})
    (burned,) = only(decision, ev.LcBurned)
    assert isinstance(burned, ev.LcBurned)
    assert burned.amount == 40 and decision.states[ALICE].balance == 60
    with pytest.raises(InsufficientFunds):
        run(take(lc=101), {ALICE: member(100)})
    with pytest.raises(UnknownMember):
        run(take(lc=1))
    with pytest.raises(InvalidAmount):
        run(take(lc=0), {ALICE: member(100)})
    limit = DEFAULT_CONFIG.admin_grant_max_lc
    with pytest.raises(InvalidAmount):
        run(take(lc=limit + 1), {ALICE: member(limit * 2)})
    assert run(take(lc=limit), {ALICE: member(limit * 2)}).states[ALICE].balance == limit


# --- items ---------------------------------------------------------------------------------------


def give_item(
    item: str, quantity: object = 1, actor: Actor = ADMIN, source: str = "admin"
) -> cmd.GrantItem:
    return cmd.GrantItem(
        guild_id=G,
        command_id=cid(),
        member_id=ALICE,
        item=item,
        quantity=quantity,  # type: ignore[arg-type]
        item_source=source,
        actor=actor,
        at=T0,
    )


def use_item(item: str, entropy: int = 0) -> cmd.UseItem:
    return cmd.UseItem(
        guild_id=G, command_id=cid(), member_id=ALICE, item=item, entropy=entropy, at=T0
    )


def test_item_grant_adds_to_inventory() -> None:
    decision = run(give_item("jackpot", 3))
    assert types(decision) == ["member_joined", "item_granted"]
    assert decision.states[ALICE].items == {"jackpot": 3}
    more = run(give_item("jackpot", 2), decision.states)
    assert more.states[ALICE].items == {"jackpot": 5}


def test_item_grant_permissions_and_validation() -> None:
    with pytest.raises(NotPermitted):
        run(give_item("x2", actor=PLAIN))
    assert run(give_item("x2", actor=PLAIN, source="game")).events
    with pytest.raises(UnknownItem, match="bogus"):
        run(give_item("bogus"))
    with pytest.raises(InvalidAmount):
        run(give_item("x2", quantity=0))
    with pytest.raises(InvalidInput):
        run(give_item("x2", source="theft"))


def test_jackpot_roll_from_configured_amounts_is_recorded() -> None:
    states = {ALICE: member(0, items={"jackpot": 1})}
    seen = {}
    for entropy in range(6):
        decision = run(use_item("jackpot", entropy), states)
        (opened,) = only(decision, ev.JackpotOpened)
        assert isinstance(opened, ev.JackpotOpened)
        seen[entropy] = opened.amount
        assert decision.states[ALICE].balance == opened.amount
        assert decision.states[ALICE].items == {}
    assert set(seen.values()) == {25, 50, 100}
    config = msgspec.structs.replace(DEFAULT_CONFIG, jackpot_amounts=(7, 9))
    amounts = {
        only(run(use_item("jackpot", e), states, config), ev.JackpotOpened)[0].amount
        for e in range(4)
    }  # type: ignore[attr-defined]
    assert amounts == {7, 9}


@pytest.mark.parametrize(("item", "factor"), [("x2", 200), ("x3", 300)])
def test_multiplier_item_activates_for_n_games(item: str, factor: int) -> None:
    config = msgspec.structs.replace(DEFAULT_CONFIG, multiplier_games=3)
    decision = run(use_item(item), {ALICE: member(items={item: 2})}, config)
    (activated,) = only(decision, ev.MultiplierActivated)
    assert isinstance(activated, ev.MultiplierActivated)
    assert (activated.factor_pct, activated.games) == (factor, 3)
    assert decision.states[ALICE].items == {item: 1}
    assert decision.states[ALICE].multiplier == ActiveMultiplier(item, factor, 3)


def test_one_multiplier_active_at_a_time() -> None:
    states = run(use_item("x2"), {ALICE: member(items={"x2": 1, "x3": 1})}).states
    with pytest.raises(InvalidInput, match="x2"):
        run(use_item("x3"), states)


def test_using_an_item_not_held_or_unknown() -> None:
    with pytest.raises(UnknownItem):
        run(use_item("jackpot"), {ALICE: member()})
    with pytest.raises(UnknownItem):
        run(use_item("golden-goose"), {ALICE: member(items={"jackpot": 1})})


# --- warnings ------------------------------------------------------------------------------------


def warn(at: datetime = T0, actor: Actor = MOD, member_id: int = ALICE) -> cmd.IssueWarning:
    return cmd.IssueWarning(
        guild_id=G, command_id=cid(), member_id=member_id, actor=actor, reason="spam", at=at
    )


def test_warning_issue_records_expiry_and_needs_a_moderator() -> None:
    command = warn()
    decision = run(command)
    (issued,) = only(decision, ev.WarningIssued)
    assert isinstance(issued, ev.WarningIssued)
    assert issued.warning_id == command.command_id == decision.ref
    assert issued.expires_at == T0 + timedelta(days=30)
    assert issued.moderator_id == MOD.user_id
    assert decision.states[ALICE].warnings == (
        ActiveWarning(command.command_id, issued.expires_at),
    )
    with pytest.raises(NotPermitted):
        run(warn(actor=PLAIN))
    with pytest.raises(InvalidInput):
        run(warn(actor=Actor(ALICE, is_moderator=True)))


def test_warning_threshold_triggers_the_action() -> None:
    states: Mapping[int, MemberState] = {}
    for n in range(1, 4):
        decision = run(warn(T0 + timedelta(hours=n)), states)
        states = decision.states
        reached = only(decision, ev.ThresholdReached)
        if n < 3:
            assert reached == []
        else:
            (action,) = reached
            assert isinstance(action, ev.ThresholdReached)
            assert (action.active_warnings, action.action, action.duration_minutes) == (
                3,
                "timeout",
                60,
            )


def test_warnings_past_expiry_do_not_count_toward_threshold() -> None:
    states = run(warn(T0)).states
    states = run(warn(T0 + timedelta(days=1)), states).states
    later = run(warn(T0 + timedelta(days=31)), states)  # the first has expired by then
    assert only(later, ev.ThresholdReached) == []


def test_warning_pardon_and_expire() -> None:
    first, second = warn(T0), warn(T0)
    states = run(first).states
    states = run(second, states).states
    pardon = cmd.PardonWarning(
        guild_id=G, command_id=cid(), member_id=ALICE, actor=MOD, warning_id=first.command_id, at=T0
    )
    pardoned = run(pardon, states)
    assert types(pardoned) == ["warning_pardoned"]
    assert [w.warning_id for w in pardoned.states[ALICE].warnings] == [second.command_id]
    with pytest.raises(InvalidInput):
        run(pardon, pardoned.states)  # no longer active
    with pytest.raises(NotPermitted):
        run(msgspec.structs.replace(pardon, actor=PLAIN), states)

    def expire(at: datetime) -> cmd.ExpireWarning:
        return cmd.ExpireWarning(
            guild_id=G, command_id=cid(), member_id=ALICE, warning_id=second.command_id, at=at
        )

    early = run(expire(T0 + timedelta(days=29)), pardoned.states)
    assert early.events == [] and early.note == "not_due"
    due = run(expire(T0 + timedelta(days=30)), pardoned.states)
    assert types(due) == ["warning_expired"]
    assert due.states[ALICE].warnings == ()
    gone = run(expire(T0 + timedelta(days=31)), due.states)
    assert gone.events == [] and gone.note == "not_active"


# --- config --------------------------------------------------------------------------------------


def configure(key: str, value: object, actor: Actor = ADMIN) -> cmd.ChangeConfig:
    return cmd.ChangeConfig(guild_id=G, command_id=cid(), actor=actor, key=key, value=value, at=T0)


BAD_SETTINGS: list[tuple[str, object]] = [
    ("no_such_setting", 1),
    ("daily_amount", "lots"),
    ("daily_amount", True),
    ("daily_amount", 2.5),
    ("daily_amount", None),
    ("daily_amount", -1),
    ("no_xp_channels", [1, -2]),
    ("message_xp_min", 30),  # above message_xp_max
    ("jackpot_amounts", []),
    ("warning_action", "x" * 10_000),  # bounded text (DESIGN §7)
    ("warning_action", "time\x00out"),  # no control characters
]


@pytest.mark.parametrize(
    ("key", "value"), BAD_SETTINGS, ids=[f"{k}={str(v)[:12]!r}" for k, v in BAD_SETTINGS]
)
def test_config_change_validated(key: str, value: object) -> None:
    with pytest.raises(InvalidInput):
        run(configure(key, value))


def test_extreme_multipliers_cannot_push_xp_beyond_bigint() -> None:
    """XP is a bigint in the log's readers: no allowed configuration may decide more."""
    config = DEFAULT_CONFIG
    for key, value in (
        ("guild_multiplier_pct", 10**15),
        ("channel_multipliers_pct", {CHANNEL: 10**15}),
        ("role_multipliers_pct", {1: 10**15}),
    ):
        try:
            changed = run(configure(key, value), config=config).events[0]
        except InvalidInput:
            continue
        assert isinstance(changed, ev.ConfigChanged)
        config = evolve_config(config, changed)
    try:
        decision = run(message(entropy=10, role_ids=frozenset({1})), config=config)
    except LedgerError:
        return  # refusing the grant is as good as refusing the configuration
    assert decision.states[ALICE].xp <= 2**63 - 1


def test_config_change_needs_an_admin() -> None:
    with pytest.raises(NotPermitted):
        run(configure("daily_amount", 80, actor=MOD))


def test_config_change_applied_by_fold_and_used_by_later_rules() -> None:
    decision = run(configure("daily_amount", 80))
    (changed,) = decision.events
    assert isinstance(changed, ev.ConfigChanged)
    assert (changed.member_id, changed.key, changed.value, changed.actor_id) == (
        0,
        "daily_amount",
        80,
        ADMIN.user_id,
    )
    config = evolve_config(DEFAULT_CONFIG, changed)
    assert config.daily_amount == 80
    assert run(daily(T0), config=config).value == 80


def test_config_change_of_a_set_survives_the_stored_round_trip() -> None:
    decision = run(configure("no_xp_channels", [CHANNEL, 3]))
    stored = ev.decode(ev.encode(decision.events[0]))
    assert isinstance(stored, ev.ConfigChanged)
    config = evolve_config(DEFAULT_CONFIG, stored)
    assert config.no_xp_channels == frozenset({3, CHANNEL})
    assert run(message(channel_id=CHANNEL), config=config).note == "no_xp_channel"


# --- reverts -------------------------------------------------------------------------------------


def revert(positions: Sequence[int], actor: Actor = ADMIN) -> cmd.Revert:
    return cmd.Revert(
        guild_id=G, command_id=cid(), actor=actor, positions=tuple(positions), reason="abuse", at=T0
    )


def test_revert_compensates_with_reverted_events() -> None:
    original = run(grant(lc=100, xp=50), {ALICE: member(10)})
    history = recorded(original, first_position=40)
    by_type = {ev.event_type(r.event): r for r in history}
    positions = [by_type["lc_minted"].position, by_type["xp_granted"].position]
    decision = run(
        revert(positions), original.states, originals=[by_type["lc_minted"], by_type["xp_granted"]]
    )
    reverts = only(decision, ev.Reverted)
    assert [(r.position, r.lc_delta, r.xp_delta) for r in reverts] == [  # type: ignore[attr-defined]
        (positions[0], -100, 0),
        (positions[1], 0, -50),
    ]
    after = decision.states[ALICE]
    assert (after.balance, after.xp) == (10, 0)
    assert after.reverted == frozenset(positions)


def test_revert_is_idempotent_on_already_reverted_positions() -> None:
    original = run(grant(lc=100), {ALICE: member(10)})
    history = [r for r in recorded(original, 7) if isinstance(r.event, ev.LcMinted)]
    first = run(revert([7]), original.states, originals=history)
    assert len(only(first, ev.Reverted)) == 1
    second = run(revert([7]), first.states, originals=history)
    assert second.events == [] and second.note == "already_reverted"
    assert second.states[ALICE].balance == 10


def test_revert_refused_when_it_would_push_a_balance_negative() -> None:
    original = run(grant(lc=100), {ALICE: member(0)})
    history = [r for r in recorded(original, 3) if isinstance(r.event, ev.LcMinted)]
    spent = {ALICE: msgspec.structs.replace(original.states[ALICE], balance=30)}
    with pytest.raises(InsufficientFunds):
        run(revert([3]), spent, originals=history)


def test_revert_of_a_transfer_undoes_both_halves() -> None:
    states = {ALICE: member(100), BOB: member(0)}
    original = run(transfer(40), states)
    history = recorded(original, 20)
    decision = run(revert([20]), original.states, originals=history)
    assert sorted((r.member_id, r.lc_delta) for r in only(decision, ev.Reverted)) == [  # type: ignore[attr-defined]
        (ALICE, 40),
        (BOB, -40),
    ]
    assert decision.states[ALICE].balance == 100 and decision.states[BOB].balance == 0


def test_revert_of_xp_moves_the_level_back_down() -> None:
    original = run(grant(xp=300), {ALICE: member()})
    assert original.states[ALICE].level == 2
    history = [r for r in recorded(original, 1) if isinstance(r.event, ev.XpGranted)]
    decision = run(revert([history[0].position]), original.states, originals=history)
    (change,) = only(decision, ev.LevelChanged)
    assert isinstance(change, ev.LevelChanged)
    assert (change.old_level, change.new_level) == (2, 0)


def test_revert_refuses_unknown_and_unrevertible_positions_and_non_admins() -> None:
    issued = run(warn())
    history = recorded(issued, 5)
    with pytest.raises(InvalidInput, match="cannot be reverted"):
        run(revert([5]), issued.states, originals=history)
    with pytest.raises(InvalidInput, match="99"):
        run(revert([5, 99]), issued.states, originals=history)
    with pytest.raises(InvalidInput):
        run(revert([]))
    with pytest.raises(NotPermitted):
        run(revert([5], actor=MOD), issued.states, originals=history)


# --- levels --------------------------------------------------------------------------------------


def mee6_total(level: int) -> int:
    """Closed form of sum(5L² + 50L + 100 for L < level), independent of `ledger.levels`."""
    n = level
    return 5 * (n - 1) * n * (2 * n - 1) // 6 + 25 * n * (n - 1) + 100 * n


def test_mee6_curve_known_totals() -> None:
    assert [mee6_total(level) for level in range(6)] == [0, 100, 255, 475, 770, 1150]
    assert mee6_total(10) == 4675
    assert mee6_total(100) == 1_899_250
    for level in range(0, 300):
        assert total_xp_for_level(level) == mee6_total(level)
        assert xp_to_next(level) == 5 * level * level + 50 * level + 100


def test_level_is_a_monotone_function_of_xp() -> None:
    for level in (1, 2, 5, 10, 57, 100):
        start = mee6_total(level)
        assert level_for_xp(start - 1) == level - 1
        assert level_for_xp(start) == level
    assert level_for_xp(0) == 0 and level_for_xp(-10) == 0
    levels = [level_for_xp(xp) for xp in range(0, 20_000, 7)]
    assert levels == sorted(levels)


def test_level_changed_events_follow_the_curve() -> None:
    just_below = run(grant(xp=99))
    assert only(just_below, ev.LevelChanged) == []
    exact = run(grant(xp=1), just_below.states)
    (up,) = only(exact, ev.LevelChanged)
    assert isinstance(up, ev.LevelChanged)
    assert (up.old_level, up.new_level) == (0, 1)
    assert exact.states[ALICE].level == 1
    # A jump over several levels is one visible change, from the old level to the new one.
    jump = run(grant(xp=mee6_total(5) - 100), exact.states)
    (up,) = only(jump, ev.LevelChanged)
    assert isinstance(up, ev.LevelChanged)
    assert (up.old_level, up.new_level) == (1, 5)
    # The level-up follows the event that caused it.
    assert types(jump) == ["xp_granted", "level_changed"]


def test_message_xp_level_up_is_announced() -> None:
    states = {ALICE: member(xp=99)}
    decision = run(message(entropy=0), states)
    assert types(decision) == ["xp_granted", "level_changed"]
    assert decision.states[ALICE].level == 1


def test_state_of_a_decision_equals_the_fold_of_its_events() -> None:
    decision = run(transfer(10))
    assert fold([e for e in decision.events if e.member_id == ALICE]) == decision.states[ALICE]
    assert fold([e for e in decision.events if e.member_id == BOB]) == decision.states[BOB]


# --- bad input -----------------------------------------------------------------------------------


BAD_INPUT: list[tuple[cmd.AnyCommand, Mapping[int, MemberState], type[LedgerError], str]] = [
    (transfer(-3), {ALICE: member()}, InvalidAmount, "at least 1"),
    (transfer(2.5), {ALICE: member()}, InvalidAmount, "whole number"),
    (transfer(5, from_id=0), {}, InvalidInput, "Sender"),
    (transfer(5, to_id=-9), {}, InvalidInput, "Recipient"),
    (transfer(10**12), {ALICE: member()}, InvalidAmount, "at most"),
    (transfer(500), {ALICE: member()}, InsufficientFunds, "25 LC"),
    (grant(lc=10, actor=PLAIN), {}, NotPermitted, "admins"),
    (give_item("bogus"), {}, UnknownItem, "bogus"),
    (use_item("x3"), {ALICE: member()}, UnknownItem, "x3"),
    (configure("no_such_setting", 1), {}, InvalidInput, "no_such_setting"),
    (configure("daily_amount", "lots"), {}, InvalidInput, "daily_amount"),
    (configure("daily_amount", -1), {}, InvalidInput, "daily_amount"),
    (
        cmd.IssueWarning(
            guild_id=G, command_id="w", member_id=ALICE, actor=MOD, reason="bad\x00text", at=T0
        ),
        {},
        InvalidInput,
        "Reason",
    ),
    (
        cmd.RecordGame(
            guild_id=G, command_id="g", member_id=ALICE, game="Drop Table", won=True, at=T0
        ),
        {},
        InvalidInput,
        "Game",
    ),
]


@pytest.mark.parametrize(
    ("command", "states", "error", "mentions"),
    BAD_INPUT,
    ids=[f"{type(c).__name__}-{e.__name__}-{m}" for c, _, e, m in BAD_INPUT],
)
def test_bad_input_raises_a_ledger_error_with_a_clear_message(
    command: cmd.AnyCommand,
    states: Mapping[int, MemberState],
    error: type[LedgerError],
    mentions: str,
) -> None:
    with pytest.raises(error) as caught:
        run(command, states)
    message_text = caught.value.message
    assert isinstance(caught.value, LedgerError)
    assert str(caught.value) == message_text
    assert mentions in message_text
    assert 0 < len(message_text) <= 200
    # Member-facing text: no Python internals leaking through.
    for leak in ("<class", "Traceback", "msgspec", "NoneType"):
        assert leak not in message_text, message_text
