"""The moderation projector: warnings with their state (`warnings`) and the audit trail
(`moderation_log`)."""

from __future__ import annotations

from collections.abc import Sequence

from ledger import events as ev
from projections.projector import Delivered, Overlay, Projector
from projections.tables import Column, Table, cols

WARNINGS = Table(
    "warnings",
    key=(*cols("guild_id", "member_id"), Column("warning_id", "text")),
    values=(
        Column("status", "text", "set"),
        Column("moderator_id", "int8", "set"),
        Column("reason", "text", "set"),
        Column("issued_at", "timestamptz", "set"),
        Column("expires_at", "timestamptz", "set"),
        Column("issued_position", "int8", "set"),
        Column("closed_at", "timestamptz", "set"),
        Column("closed_by", "int8", "set"),
        Column("close_reason", "text", "set"),
    ),
    kind="state",
)

MODERATION_LOG = Table(
    "moderation_log",
    key=cols("guild_id", "position"),
    values=(
        Column("member_id", "int8", "set"),
        Column("action", "text", "set"),
        Column("moderator_id", "int8", "set"),
        Column("warning_id", "text", "set"),
        Column("reason", "text", "set"),
        Column("at", "timestamptz", "set"),
        Column("active_warnings", "int4", "set"),
        Column("duration_minutes", "int4", "set"),
    ),
    kind="append",
    member_index=None,
)


class ModerationProjector(Projector):
    """Warnings move active -> pardoned | expired; every moderation event is logged once."""

    name = "moderation"
    handles = frozenset(
        {ev.WarningIssued, ev.WarningPardoned, ev.WarningExpired, ev.ThresholdReached}
    )
    tables = (WARNINGS, MODERATION_LOG)

    async def apply(self, batch: Sequence[Delivered], state: Overlay) -> None:
        """Load the touched warnings, then fold the batch event by event."""
        await state.load(
            WARNINGS,
            {
                (d.guild_id, d.event.member_id, d.event.warning_id)
                for d in batch
                if isinstance(d.event, ev.WarningIssued | ev.WarningPardoned | ev.WarningExpired)
            },
        )
        for d in batch:
            event = d.event
            match event:
                case ev.WarningIssued():
                    key = (d.guild_id, event.member_id, event.warning_id)
                    state.put(
                        WARNINGS,
                        key,
                        (
                            "active",
                            event.moderator_id,
                            event.reason,
                            event.at,
                            event.expires_at,
                            d.position,
                            None,
                            None,
                            None,
                        ),
                    )
                    log = ("warn", event.moderator_id, event.warning_id, event.reason, 0, 0)
                case ev.WarningPardoned():
                    self._close(
                        state, d, event.warning_id, "pardoned", event.moderator_id, event.reason
                    )
                    log = ("pardon", event.moderator_id, event.warning_id, event.reason, 0, 0)
                case ev.WarningExpired():
                    self._close(state, d, event.warning_id, "expired", None, None)
                    log = ("expire", 0, event.warning_id, "", 0, 0)
                case ev.ThresholdReached():
                    log = (
                        "threshold",
                        0,
                        "",
                        event.action,
                        event.active_warnings,
                        event.duration_minutes,
                    )
                case _:
                    continue
            action, moderator, warning_id, reason, active, minutes = log
            state.append(
                MODERATION_LOG,
                (
                    d.guild_id,
                    d.position,
                    event.member_id,
                    action,
                    moderator,
                    warning_id,
                    reason,
                    event.at,
                    active,
                    minutes,
                ),
            )

    @staticmethod
    def _close(
        state: Overlay,
        d: Delivered,
        warning_id: str,
        status: str,
        closed_by: int | None,
        reason: str | None,
    ) -> None:
        key = (d.guild_id, d.event.member_id, warning_id)
        row = state.get(WARNINGS, key)
        if row is None:  # cannot happen: the rules only close warnings that were issued
            return
        state.put(WARNINGS, key, (status, *row[1:6], d.event.at, closed_by, reason))
