"""The working area of a decision: events so far, members' states after them, input checks."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime

import msgspec

from ledger import events as ev
from ledger.errors import InsufficientFunds, InvalidAmount, InvalidInput
from ledger.guild_config import GuildConfig
from ledger.member import NEW_MEMBER, MemberState, evolve

MAX_SNOWFLAKE = 2**63 - 1
MAX_XP = 2**62  # far above any real total, far below bigint overflow
MAX_TEXT = 500


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What a command decided: the events to append and its headline figure."""

    events: list[ev.AnyEvent]
    value: int = 0  # XP granted, LC moved or won: what the reply shows first
    note: str = ""  # why nothing was appended ("cooldown", "no_xp_channel", ...)
    ref: str = ""  # an id the command created (a warning id)
    states: dict[int, MemberState] = {}  # every loaded or touched member's state after it


class Draft:
    """Accumulates events, folding each into its member's state as it is added.

    Every added event is checked against the invariants (no negative balance or item count,
    balance within the guild's maximum), and a `LevelChanged` follows any event that moves a
    member's level, so no rule can forget one.
    """

    def __init__(self, config: GuildConfig, states: Mapping[int, MemberState]) -> None:
        self.config = config
        self.states = dict(states)
        self.events: list[ev.AnyEvent] = []

    def state(self, member_id: int) -> MemberState:
        """The member's state after the events drafted so far."""
        return self.states.get(member_id, NEW_MEMBER)

    def add(self, event: ev.AnyEvent) -> None:
        """Append an event, check the invariants it could break, announce level changes."""
        before = self.state(event.member_id)
        after = evolve(before, event)
        if after.balance < 0:
            raise InsufficientFunds(
                f"<@{event.member_id}> has {before.balance} LC, not enough for this."
            )
        if after.balance > self.config.max_balance:
            raise InvalidAmount(
                f"That would take <@{event.member_id}> above the maximum balance "
                f"of {self.config.max_balance} LC."
            )
        if after.xp > MAX_XP:
            raise InvalidAmount(f"That would take <@{event.member_id}> above {MAX_XP} XP.")
        if any(count < 0 for count in after.items.values()):
            raise InsufficientFunds(f"<@{event.member_id}> does not hold enough of that item.")
        self.events.append(event)
        self.states[event.member_id] = after
        if after.level != before.level:
            change = ev.LevelChanged(
                member_id=event.member_id,
                at=event.at,
                old_level=before.level,
                new_level=after.level,
            )
            self.events.append(change)
            self.states[event.member_id] = evolve(after, change)

    def ensure_joined(self, member_id: int, at: datetime) -> None:
        """Open the member's wallet with the starting balance on their first interaction."""
        if not self.state(member_id).joined:
            self.add(
                ev.MemberJoined(
                    member_id=member_id, at=at, starting_balance=self.config.starting_balance
                )
            )

    def decision(self, value: int = 0, note: str = "", ref: str = "") -> Decision:
        """The finished decision."""
        return Decision(events=self.events, value=value, note=note, ref=ref, states=self.states)


def check_id(value: object, what: str) -> int:
    """A Discord snowflake: a positive 63-bit integer."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_SNOWFLAKE:
        raise InvalidInput(f"{what} must be a Discord id (a positive integer).")
    return value


def check_amount(value: object, limit: int, what: str = "Amount") -> int:
    """A positive whole number no larger than `limit`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidAmount(f"{what} must be a whole number.")
    if value <= 0:
        raise InvalidAmount(f"{what} must be at least 1.")
    if value > limit:
        raise InvalidAmount(f"{what} can be at most {limit}.")
    return value


def check_text(value: object, what: str, required: bool = False, limit: int = MAX_TEXT) -> str:
    """Free text: at most `limit` characters, no control characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text.")
    text = value.strip()
    if required and not text:
        raise InvalidInput(f"{what} cannot be empty.")
    if len(text) > limit:
        raise InvalidInput(f"{what} can be at most {limit} characters.")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in text):
        raise InvalidInput(f"{what} cannot contain control or unassigned characters.")
    return text


def multiplier_pct(config: GuildConfig, channel_id: int, role_ids: frozenset[int]) -> int:
    """The guild * channel * best-role multiplier in force, in percent."""
    role_pct = max((config.role_multipliers_pct.get(r, 100) for r in role_ids), default=100)
    channel_pct = config.channel_multipliers_pct.get(channel_id, 100)
    return config.guild_multiplier_pct * channel_pct * role_pct // 10_000
