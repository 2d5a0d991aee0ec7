"""XP rules: messages, voice ticks, reactions received, game results."""

from __future__ import annotations

import re

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import InsufficientFunds, InvalidInput
from ledger.member import REACTION_WINDOW
from ledger.rules.draft import Decision, Draft, check_id, check_text, multiplier_pct

_GAME_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")


def message_xp(draft: Draft, c: cmd.GrantMessageXp) -> Decision:
    """XP for a message: a recorded roll * multipliers, one grant per cooldown window."""
    config = draft.config
    check_id(c.member_id, "Member")
    check_id(c.channel_id, "Channel")
    check_id(c.message_id, "Message")
    if c.channel_id in config.no_xp_channels:
        return draft.decision(note="no_xp_channel")
    if c.role_ids & config.no_xp_roles:
        return draft.decision(note="no_xp_role")
    last = draft.state(c.member_id).last_message_xp_at
    if last is not None and (c.at - last).total_seconds() < config.message_cooldown_seconds:
        return draft.decision(note="cooldown")
    span = config.message_xp_max - config.message_xp_min + 1
    roll = config.message_xp_min + c.entropy % span
    pct = multiplier_pct(config, c.channel_id, c.role_ids)
    xp = roll * pct // 100
    draft.ensure_joined(c.member_id, c.at)
    draft.add(
        ev.XpGranted(
            member_id=c.member_id,
            at=c.at,
            source="message",
            base=roll,
            multiplier_pct=pct,
            xp=xp,
            channel_id=c.channel_id,
            ref_id=c.message_id,
        )
    )
    return draft.decision(value=xp)


def voice_tick(draft: Draft, c: cmd.VoiceTick) -> Decision:
    """XP for a voice tick with enough unmuted humans; a bonus for every full hour."""
    config = draft.config
    check_id(c.member_id, "Member")
    check_id(c.channel_id, "Channel")
    if c.unmuted_humans < config.voice_min_humans:
        return draft.decision(note="not_enough_listeners")
    if c.channel_id in config.no_xp_channels or c.role_ids & config.no_xp_roles:
        return draft.decision(note="no_xp_channel")
    pct = multiplier_pct(config, c.channel_id, c.role_ids)
    xp = config.voice_xp_per_tick * pct // 100
    seconds = config.voice_tick_seconds
    before = draft.state(c.member_id).voice_seconds
    draft.ensure_joined(c.member_id, c.at)
    draft.add(
        ev.XpGranted(
            member_id=c.member_id,
            at=c.at,
            source="voice",
            base=config.voice_xp_per_tick,
            multiplier_pct=pct,
            xp=xp,
            channel_id=c.channel_id,
            seconds=seconds,
        )
    )
    total = xp
    if (before + seconds) // 3600 > before // 3600 and config.voice_hourly_bonus_xp:
        bonus = config.voice_hourly_bonus_xp
        draft.add(
            ev.XpGranted(
                member_id=c.member_id,
                at=c.at,
                source="voice_bonus",
                base=bonus,
                multiplier_pct=100,
                xp=bonus,
                channel_id=c.channel_id,
            )
        )
        total += bonus
    return draft.decision(value=total)


def reaction(draft: Draft, c: cmd.ReactionReceived) -> Decision:
    """XP to a message's author for a reaction by someone else, capped per message."""
    config = draft.config
    check_id(c.author_id, "Author")
    check_id(c.reactor_id, "Reactor")
    check_id(c.message_id, "Message")
    if c.author_id == c.reactor_id:
        return draft.decision(note="self_reaction")
    if c.channel_id in config.no_xp_channels:
        return draft.decision(note="no_xp_channel")
    seen = draft.state(c.author_id).reactions
    if seen.get(c.message_id, 0) >= config.reaction_cap_per_message:
        return draft.decision(note="reaction_cap")
    if c.message_id not in seen and len(seen) >= REACTION_WINDOW and c.message_id < min(seen):
        # older than every message the cap still remembers: its count is unknown, so no XP
        return draft.decision(note="reaction_too_old")
    draft.ensure_joined(c.author_id, c.at)
    draft.add(
        ev.XpGranted(
            member_id=c.author_id,
            at=c.at,
            source="reaction",
            base=config.reaction_xp,
            multiplier_pct=100,
            xp=config.reaction_xp,
            channel_id=c.channel_id,
            ref_id=c.message_id,
            actor_id=c.reactor_id,
        )
    )
    return draft.decision(value=config.reaction_xp)


def game(draft: Draft, c: cmd.RecordGame) -> Decision:
    """A game result: XP (item multiplier consumed), bet burned, payout minted."""
    config = draft.config
    check_id(c.member_id, "Member")
    name = check_text(c.game, "Game", required=True, limit=32)
    if not _GAME_NAME.match(name):
        raise InvalidInput("Game names use lowercase letters, digits, '-' and '_'.")
    for amount, what in ((c.bet, "Bet"), (c.payout, "Payout")):
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidInput(f"{what} must be a whole number, 0 or more.")
        if amount > config.max_amount:
            raise InvalidInput(f"{what} can be at most {config.max_amount}.")
    draft.ensure_joined(c.member_id, c.at)
    state = draft.state(c.member_id)
    if c.bet > state.balance:
        raise InsufficientFunds(f"You bet {c.bet} LC but have {state.balance} LC.")
    base = config.game_xp_win if c.won else config.game_xp_loss
    pct = state.multiplier.factor_pct if state.multiplier else 100
    xp = base * pct // 100
    draft.add(
        ev.GamePlayed(
            member_id=c.member_id,
            at=c.at,
            game=name,
            won=bool(c.won),
            base_xp=base,
            multiplier_pct=pct,
            xp=xp,
            bet=c.bet,
            payout=c.payout,
        )
    )
    return draft.decision(value=xp)
