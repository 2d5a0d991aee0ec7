"""Warning rules: issue, pardon, expire, and the threshold action."""

from __future__ import annotations

from datetime import timedelta

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import InvalidInput, NotPermitted
from ledger.rules.draft import Decision, Draft, check_id, check_text


def _require_moderator(actor: cmd.Actor) -> None:
    if not (actor.is_moderator or actor.is_admin):
        raise NotPermitted("Only moderators can do that.")


def issue(draft: Draft, c: cmd.IssueWarning) -> Decision:
    """Warn a member; reaching the threshold of active warnings records the action to take."""
    config = draft.config
    _require_moderator(c.actor)
    check_id(c.member_id, "Member")
    reason = check_text(c.reason, "Reason", required=True)
    if c.actor.user_id == c.member_id:
        raise InvalidInput("You cannot warn yourself.")
    warning_id = c.command_id
    draft.add(
        ev.WarningIssued(
            member_id=c.member_id,
            at=c.at,
            warning_id=warning_id,
            moderator_id=c.actor.user_id,
            reason=reason,
            expires_at=c.at + timedelta(days=config.warning_expiry_days),
        )
    )
    active = sum(1 for w in draft.state(c.member_id).warnings if w.expires_at > c.at)
    if config.warning_action != "none" and 0 < config.warning_threshold <= active:
        draft.add(
            ev.ThresholdReached(
                member_id=c.member_id,
                at=c.at,
                active_warnings=active,
                action=config.warning_action,
                duration_minutes=config.warning_timeout_minutes,
            )
        )
    return draft.decision(value=active, ref=warning_id)


def pardon(draft: Draft, c: cmd.PardonWarning) -> Decision:
    """Withdraw an active warning."""
    _require_moderator(c.actor)
    check_id(c.member_id, "Member")
    reason = check_text(c.reason, "Reason")
    if not any(w.warning_id == c.warning_id for w in draft.state(c.member_id).warnings):
        raise InvalidInput(f"<@{c.member_id}> has no active warning {c.warning_id!r}.")
    draft.add(
        ev.WarningPardoned(
            member_id=c.member_id,
            at=c.at,
            warning_id=c.warning_id,
            moderator_id=c.actor.user_id,
            reason=reason,
        )
    )
    return draft.decision(ref=c.warning_id)


def expire(draft: Draft, c: cmd.ExpireWarning) -> Decision:
    """Retire a warning whose expiry has passed; nothing when it is gone or not yet due."""
    check_id(c.member_id, "Member")
    warning = next(
        (w for w in draft.state(c.member_id).warnings if w.warning_id == c.warning_id), None
    )
    if warning is None:
        return draft.decision(note="not_active")
    if warning.expires_at > c.at:
        return draft.decision(note="not_due")
    draft.add(ev.WarningExpired(member_id=c.member_id, at=c.at, warning_id=c.warning_id))
    return draft.decision(ref=c.warning_id)
