"""Admin rules: LC/XP grants and takes within bounds, configuration, reverts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import (
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    NotPermitted,
    UnknownMember,
)
from ledger.guild_config import GuildConfig, validate_setting
from ledger.member import item_delta, lc_delta, xp_delta
from ledger.rules.draft import Decision, Draft, check_amount, check_id, check_text

REVERTIBLE = (
    ev.MemberJoined,
    ev.LcMinted,
    ev.LcBurned,
    ev.DailyClaimed,
    ev.InviteRewarded,
    ev.TransferSent,
    ev.TransferReceived,
    ev.XpGranted,
    ev.GamePlayed,
    ev.ItemGranted,
    ev.JackpotOpened,
)
MAX_REVERT = 10_000


def _require_admin(actor: cmd.Actor) -> None:
    if not actor.is_admin:
        raise NotPermitted("Only admins can do that.")


def grant(draft: Draft, c: cmd.AdminGrant) -> Decision:
    """Mint LC and/or grant XP, each within the guild's admin bounds."""
    config = draft.config
    _require_admin(c.actor)
    check_id(c.member_id, "Member")
    reason = check_text(c.reason, "Reason")
    if c.lc == 0 and c.xp == 0:
        raise InvalidAmount("Grant some LC or XP (at least 1).")
    if c.lc:
        check_amount(c.lc, config.admin_grant_max_lc, "LC")
    if c.xp:
        check_amount(c.xp, config.admin_grant_max_xp, "XP")
    draft.ensure_joined(c.member_id, c.at)
    if c.lc:
        draft.add(
            ev.LcMinted(
                member_id=c.member_id,
                at=c.at,
                amount=c.lc,
                reason="admin",
                actor_id=c.actor.user_id,
                note=reason,
            )
        )
    if c.xp:
        draft.add(
            ev.XpGranted(
                member_id=c.member_id,
                at=c.at,
                source="admin",
                base=c.xp,
                multiplier_pct=100,
                xp=c.xp,
                actor_id=c.actor.user_id,
            )
        )
    return draft.decision(value=c.lc or c.xp)


MAX_IMPORTED_XP = 10**12


def import_xp(draft: Draft, c: cmd.ImportXp) -> Decision:
    """Grant the difference between the imported total and what was imported before, so
    importing the same leaderboard twice (or an older one) changes nothing."""
    _require_admin(c.actor)
    check_id(c.member_id, "Member")
    if not isinstance(c.xp, int) or isinstance(c.xp, bool) or not 0 <= c.xp <= MAX_IMPORTED_XP:
        raise InvalidAmount(f"Imported XP must be a whole number from 0 to {MAX_IMPORTED_XP}.")
    source_ref = check_text(c.source_ref, "Source", required=True, limit=128)
    missing = c.xp - draft.state(c.member_id).imported_xp
    if missing <= 0:
        return draft.decision(note="already_imported")
    draft.ensure_joined(c.member_id, c.at)
    draft.add(
        ev.XpGranted(
            member_id=c.member_id,
            at=c.at,
            source="import",
            base=missing,
            multiplier_pct=100,
            xp=missing,
            actor_id=c.actor.user_id,
            source_ref=source_ref,
        )
    )
    return draft.decision(value=missing)


def take(draft: Draft, c: cmd.AdminTake) -> Decision:
    """Burn LC from a member; never below zero."""
    _require_admin(c.actor)
    check_id(c.member_id, "Member")
    amount = check_amount(c.lc, draft.config.admin_grant_max_lc, "LC")
    reason = check_text(c.reason, "Reason")
    if not draft.state(c.member_id).joined:
        raise UnknownMember(f"<@{c.member_id}> has no wallet yet.")
    draft.add(
        ev.LcBurned(
            member_id=c.member_id,
            at=c.at,
            amount=amount,
            reason="admin",
            actor_id=c.actor.user_id,
            note=reason,
        )
    )
    return draft.decision(value=amount)


def configure(draft: Draft, c: cmd.ChangeConfig) -> Decision:
    """Change one guild setting, validated against the current configuration."""
    _require_admin(c.actor)
    key = check_text(c.key, "Setting", required=True, limit=64)
    value = validate_setting(draft.config, key, _edited(draft.config, key, c.op, c.value))
    if isinstance(value, frozenset):
        value = sorted(value)
    draft.events.append(
        ev.ConfigChanged(member_id=0, at=c.at, key=key, value=value, actor_id=c.actor.user_id)
    )
    return draft.decision()


def _edited(config: GuildConfig, key: str, op: str, value: Any) -> Any:
    """The setting's new value for `op`: the value itself, or the current one edited."""
    if op == "set":
        return value
    if op not in ("add", "remove"):
        raise InvalidInput("A setting change is `set`, `add` or `remove`.")
    current = getattr(config, key, None)
    if isinstance(current, frozenset):
        items = value if isinstance(value, list | tuple | set | frozenset) else [value]
        return sorted(current | set(items)) if op == "add" else sorted(current - set(items))
    if isinstance(current, dict):
        if op == "add":
            if not isinstance(value, dict):
                raise InvalidInput(f"Adding to `{key}` takes a mapping.")
            return {**current, **value}
        keys = value if isinstance(value, list | tuple | set | frozenset) else [value]
        return {k: v for k, v in current.items() if k not in set(keys)}
    raise InvalidInput(f"`{key}` is not a list or mapping setting; use `set`.")


def revert(draft: Draft, c: cmd.Revert, originals: Sequence[ev.Recorded]) -> Decision:
    """Compensate each original event with a `Reverted` that names its position.

    Already-reverted positions are skipped (a revert is idempotent). One that would leave a
    balance or an item count negative is refused as a whole, with what is short, unless
    `on_shortfall` is "clamp": then only what the member holds is taken back, and the rest is
    recorded in the event as `shortfall` (LC) / `item_shortfall`.
    """
    _require_admin(c.actor)
    reason = check_text(c.reason, "Reason")
    if c.on_shortfall not in ("refuse", "clamp"):
        raise InvalidInput("On a shortfall a revert can `refuse` or `clamp`.")
    if not c.positions:
        raise InvalidInput("Name at least one event position to revert.")
    if len(c.positions) > MAX_REVERT:
        raise InvalidInput(f"Revert at most {MAX_REVERT} events at once.")
    found = {r.position for r in originals}
    missing = sorted(set(c.positions) - found)
    if missing:
        raise InvalidInput(f"No event at position(s) {', '.join(map(str, missing[:10]))}.")
    for recorded in sorted(originals, key=lambda r: r.position):
        event = recorded.event
        if recorded.position in draft.state(event.member_id).reverted:
            continue
        if not isinstance(event, REVERTIBLE):
            raise InvalidInput(
                f"Event {recorded.position} ({ev.event_type(event)}) cannot be reverted."
            )
        item, count = item_delta(event)
        state = draft.state(event.member_id)
        lc, items = -lc_delta(event), -count
        lc_short = max(0, -(state.balance + lc))
        item_short = max(0, -(state.items.get(item, 0) + items)) if item else 0
        if (lc_short or item_short) and c.on_shortfall == "refuse":
            raise InsufficientFunds(
                f"Reverting event {recorded.position} would leave <@{event.member_id}> short of "
                + (f"{lc_short} LC" if lc_short else f"{item_short} x {item}")
                + " (they spent or moved it since). Re-run with on_shortfall=clamp to take back "
                "only what they hold; the rest is recorded as a shortfall."
            )
        draft.add(
            ev.Reverted(
                member_id=event.member_id,
                at=c.at,
                position=recorded.position,
                lc_delta=lc + lc_short,
                xp_delta=-xp_delta(event),
                item=item,
                item_delta=items + item_short,
                actor_id=c.actor.user_id,
                reason=reason,
                shortfall=lc_short,
                item_shortfall=item_short,
            )
        )
    if not draft.events:
        return draft.decision(note="already_reverted")
    return draft.decision(value=len(draft.events))
