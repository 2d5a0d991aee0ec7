"""Side effects of events on Discord: what they are, how they are planned, who carries them out.

An event that Discord should see (a level change, a warning threshold) becomes one or more
effects, planned from the event, the guild config in force when the outbox consumer reads it,
and the event that caused a level change (for the channel to announce in). Planning is pure;
`gateway.outbox` stores the effects and delivers them through a `SideEffectSender`, which the
bot implements with Discord calls (`gateway.discord_effects`) and tests with a fake.

Each delivery carries its key `(guild_id, position, effect)` and a `nonce` derived from it: a
resend after a crash (at-least-once delivery) is deduplicated by the receiver with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from ledger import events as ev
from ledger.guild_config import GuildConfig


class LevelAnnouncement(msgspec.Struct, frozen=True, kw_only=True, tag="level_announcement"):
    """Say that a member reached a level, in `channel_id` (0: the guild's fallback channel)."""

    member_id: int
    old_level: int
    new_level: int
    channel_id: int
    at: datetime


class LevelRoles(msgspec.Struct, frozen=True, kw_only=True, tag="level_roles"):
    """Bring a member's level roles in line with `level`: add `add`, remove `remove`."""

    member_id: int
    level: int
    add: tuple[int, ...]
    remove: tuple[int, ...]


class WarningAction(msgspec.Struct, frozen=True, kw_only=True, tag="warning_action"):
    """The action for reaching the warning threshold (`timeout` until `until`)."""

    member_id: int
    action: str
    until: datetime
    active_warnings: int


Effect = LevelAnnouncement | LevelRoles | WarningAction

EFFECT_NAMES: tuple[str, ...] = tuple(
    str(t.__struct_config__.tag) for t in (LevelAnnouncement, LevelRoles, WarningAction)
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Effect)


def effect_name(effect: Effect) -> str:
    """The stored name (msgspec tag) of an effect."""
    return str(effect.__struct_config__.tag)


def encode_effect(effect: Effect) -> str:
    """The jsonb payload of an effect."""
    return _encoder.encode(effect).decode()


def decode_effect(payload: str | bytes) -> Effect:
    """Decode a stored effect."""
    decoded: Effect = _decoder.decode(payload)
    return decoded


@dataclass(frozen=True, slots=True)
class Cause:
    """The event just before a `LevelChanged` on the member's stream: what moved the level."""

    type: str
    source: str  # XpGranted.source ("message", "voice", "import", ...), "" for other events
    channel_id: int


def level_roles_for(level_roles: Mapping[int, int], mode: str, level: int) -> frozenset[int]:
    """The level roles a member at `level` holds: every reached one ("stack") or the highest."""
    reached = sorted((lvl, role) for lvl, role in level_roles.items() if lvl <= level)
    if not reached:
        return frozenset()
    if mode == "replace":
        return frozenset({reached[-1][1]})
    return frozenset(role for _, role in reached)


def plan_effects(event: ev.AnyEvent, config: GuildConfig, cause: Cause | None) -> list[Effect]:
    """The side effects of one event under `config` (none for events Discord need not see).

    A level-up is announced unless it came from an import (a migrated leaderboard would flood
    the channel); level roles are synced whenever the set a member should hold changes, also on
    the way down (a revert). The threshold action is a timeout from the event's time.
    """
    match event:
        case ev.LevelChanged(member_id=member, old_level=old, new_level=new, at=at):
            effects: list[Effect] = []
            if new > old and not (cause and cause.source == "import"):
                channel = config.announcement_channel or (cause.channel_id if cause else 0)
                effects.append(
                    LevelAnnouncement(
                        member_id=member, old_level=old, new_level=new, channel_id=channel, at=at
                    )
                )
            mode = config.level_roles_mode
            wanted = level_roles_for(config.level_roles, mode, new)
            if wanted != level_roles_for(config.level_roles, mode, old):
                others = set(config.level_roles.values()) - wanted
                effects.append(
                    LevelRoles(
                        member_id=member,
                        level=new,
                        add=tuple(sorted(wanted)),
                        remove=tuple(sorted(others)),
                    )
                )
            return effects
        case ev.ThresholdReached(action="timeout"):
            return [
                WarningAction(
                    member_id=event.member_id,
                    action=event.action,
                    until=event.at + timedelta(minutes=event.duration_minutes),
                    active_warnings=event.active_warnings,
                )
            ]
    return []


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row handed to a sender: the effect, its key, and which attempt this is."""

    guild_id: int
    position: int
    effect: Effect
    attempt: int

    @property
    def key(self) -> tuple[int, int, str]:
        """The outbox key: (guild, event position, effect name)."""
        return (self.guild_id, self.position, effect_name(self.effect))

    @property
    def nonce(self) -> str:
        """A short id for the receiver's deduplication (Discord nonces are at most 25 chars)."""
        return f"o{self.position}{EFFECT_NAMES.index(effect_name(self.effect))}"


class GiveUp(Exception):
    """Raised by a sender when an effect can never be carried out (the member left, the role
    or channel is gone): the row is abandoned instead of retried."""


class SideEffectSender(Protocol):
    """Carries out side effects (the bot, with Discord calls; tests, with a fake)."""

    async def send(self, delivery: Delivery) -> None:
        """Carry out one effect. Raise `GiveUp` to abandon it, anything else to retry later."""
        ...
