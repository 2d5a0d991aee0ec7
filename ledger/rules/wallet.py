"""LC rules: first interaction, daily gift, invite rewards, transfers."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import CooldownActive, InsufficientFunds, InvalidInput
from ledger.rules.draft import Decision, Draft, check_amount, check_id


def join(draft: Draft, c: cmd.Join) -> Decision:
    """Open the wallet with the starting balance; nothing when it is already open."""
    check_id(c.member_id, "Member")
    draft.ensure_joined(c.member_id, c.at)
    return draft.decision(value=draft.state(c.member_id).balance)


def _seconds_to_next_day(at: datetime) -> int:
    at = at.astimezone(UTC)
    tomorrow = datetime.combine(at.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, int((tomorrow - at).total_seconds()))


def daily(draft: Draft, c: cmd.ClaimDaily) -> Decision:
    """Once per UTC day; claiming on consecutive days grows a streak bonus."""
    config = draft.config
    check_id(c.member_id, "Member")
    draft.ensure_joined(c.member_id, c.at)
    state = draft.state(c.member_id)
    day = c.at.astimezone(UTC).date().toordinal()  # the UTC day, whatever the offset of `at`
    if state.daily_day == day:
        wait = _seconds_to_next_day(c.at)
        raise CooldownActive(
            f"You already claimed today's gift. Come back in {wait // 3600}h {wait % 3600 // 60}m.",
            retry_after=wait,
        )
    streak = state.daily_streak + 1 if state.daily_day == day - 1 else 1
    amount = config.daily_amount + min(streak - 1, config.daily_streak_cap) * (
        config.daily_streak_bonus
    )
    draft.add(
        ev.DailyClaimed(member_id=c.member_id, at=c.at, day=day, streak=streak, amount=amount)
    )
    return draft.decision(value=amount)


def invite(draft: Draft, c: cmd.RewardInvite) -> Decision:
    """Reward both sides of an invite, once per invitee."""
    config = draft.config
    check_id(c.inviter_id, "Inviter")
    check_id(c.invitee_id, "Invitee")
    if c.inviter_id == c.invitee_id:
        raise InvalidInput("A member cannot invite themselves.")
    if draft.state(c.invitee_id).invited:
        return draft.decision(note="already_rewarded")
    for member_id, other_id, side, amount in (
        (c.inviter_id, c.invitee_id, "inviter", config.invite_reward_inviter),
        (c.invitee_id, c.inviter_id, "invitee", config.invite_reward_invitee),
    ):
        draft.ensure_joined(member_id, c.at)
        draft.add(
            ev.InviteRewarded(
                member_id=member_id, at=c.at, other_id=other_id, side=side, amount=amount
            )
        )
    return draft.decision(value=config.invite_reward_inviter)


def transfer(draft: Draft, c: cmd.Transfer) -> Decision:
    """Debit and credit in one decision: no overdraft, no self-transfer."""
    config = draft.config
    check_id(c.from_id, "Sender")
    check_id(c.to_id, "Recipient")
    amount = check_amount(c.amount, config.max_amount)
    if c.from_id == c.to_id:
        raise InvalidInput("You cannot send LC to yourself.")
    draft.ensure_joined(c.from_id, c.at)
    draft.ensure_joined(c.to_id, c.at)
    balance = draft.state(c.from_id).balance
    if balance < amount:
        raise InsufficientFunds(f"You have {balance} LC; you cannot send {amount} LC.")
    draft.add(ev.TransferSent(member_id=c.from_id, at=c.at, to_id=c.to_id, amount=amount))
    draft.add(ev.TransferReceived(member_id=c.to_id, at=c.at, from_id=c.from_id, amount=amount))
    return draft.decision(value=amount)
