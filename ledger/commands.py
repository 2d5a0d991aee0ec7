"""Commands: what a member, moderator or the scheduler asks the ledger to do.

Each carries an id (the Discord interaction or message snowflake where there is one) that makes
it idempotent, the guild, and the clock reading the handler decided on. Random choices are
drawn from `entropy`, set once when the command is built, so a decision can be replayed.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec


def _now() -> datetime:
    return datetime.now(UTC)


def _entropy() -> int:
    return random.getrandbits(48)


class Actor(msgspec.Struct, frozen=True):
    """Who issued a command, with the permissions the gateway verified for them."""

    user_id: int
    is_moderator: bool = False
    is_admin: bool = False


SYSTEM = Actor(0, is_moderator=True, is_admin=True)


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every command has."""

    guild_id: int
    command_id: str
    at: datetime = msgspec.field(default_factory=_now)
    source: str = "discord"  # "discord" | "cli" | "scheduler" | "demo" | "import"

    def members(self) -> tuple[int, ...]:
        """The member streams the command reads and may write."""
        raise NotImplementedError


class _OneMember(Command, frozen=True, kw_only=True):
    member_id: int

    def members(self) -> tuple[int, ...]:
        return (self.member_id,)


class Join(_OneMember, frozen=True, kw_only=True):
    """Open the member's wallet with the starting balance (a no-op when already open)."""


class GrantMessageXp(_OneMember, frozen=True, kw_only=True):
    """A message was sent: XP unless on cooldown or in a no-XP channel/role."""

    channel_id: int
    message_id: int
    role_ids: frozenset[int] = frozenset()
    entropy: int = msgspec.field(default_factory=_entropy)


class VoiceTick(_OneMember, frozen=True, kw_only=True):
    """The member spent a voice tick in `channel_id` with `unmuted_humans` unmuted humans."""

    channel_id: int
    unmuted_humans: int
    role_ids: frozenset[int] = frozenset()


class ReactionReceived(Command, frozen=True, kw_only=True):
    """`reactor_id` reacted to a message by `author_id`: XP to the author, capped."""

    author_id: int
    reactor_id: int
    message_id: int
    channel_id: int = 0

    def members(self) -> tuple[int, ...]:
        return (self.author_id,)


class RecordGame(_OneMember, frozen=True, kw_only=True):
    """A finished game: XP for the result, the bet burned, the payout minted."""

    game: str
    won: bool
    bet: int = 0
    payout: int = 0


class ClaimDaily(_OneMember, frozen=True, kw_only=True):
    """The daily gift, once per UTC day, with a streak bonus."""


class RewardInvite(Command, frozen=True, kw_only=True):
    """`invitee_id` joined through `inviter_id`'s invite: both are rewarded, once."""

    inviter_id: int
    invitee_id: int

    def members(self) -> tuple[int, ...]:
        return (self.inviter_id, self.invitee_id)


class Transfer(Command, frozen=True, kw_only=True):
    """Move `amount` LC from one member to another, atomically."""

    from_id: int
    to_id: int
    amount: int

    def members(self) -> tuple[int, ...]:
        return (self.from_id, self.to_id)


class AdminGrant(_OneMember, frozen=True, kw_only=True):
    """An admin grants LC and/or XP, within the configured bounds."""

    actor: Actor
    lc: int = 0
    xp: int = 0
    reason: str = ""


class ImportXp(_OneMember, frozen=True, kw_only=True):
    """Bring a member's XP up to `xp` from another bot's leaderboard (MEE6)."""

    actor: Actor
    xp: int
    source_ref: str


class AdminTake(_OneMember, frozen=True, kw_only=True):
    """An admin takes LC from a member (never below zero)."""

    actor: Actor
    lc: int
    reason: str = ""


class GrantItem(_OneMember, frozen=True, kw_only=True):
    """Items given by an admin, a game reward or a shop purchase."""

    item: str
    quantity: int = 1
    item_source: str = "admin"
    actor: Actor = SYSTEM


class UseItem(_OneMember, frozen=True, kw_only=True):
    """Open a jackpot or activate a multiplier."""

    item: str
    entropy: int = msgspec.field(default_factory=_entropy)


class IssueWarning(_OneMember, frozen=True, kw_only=True):
    """A moderator warns a member."""

    actor: Actor
    reason: str


class PardonWarning(_OneMember, frozen=True, kw_only=True):
    """A moderator withdraws an active warning."""

    actor: Actor
    warning_id: str
    reason: str = ""


class ExpireWarning(_OneMember, frozen=True, kw_only=True):
    """The scheduler retires a warning whose expiry has passed."""

    warning_id: str


class ChangeConfig(Command, frozen=True, kw_only=True):
    """An admin changes one guild setting: `set` it, or `add`/`remove` entries of a list or
    mapping setting (decided on the current value, so concurrent edits do not overwrite)."""

    actor: Actor
    key: str
    value: Any
    op: str = "set"  # "set" | "add" | "remove"

    def members(self) -> tuple[int, ...]:
        return ()


class Revert(Command, frozen=True, kw_only=True):
    """Compensate the events at `positions` (transfers are reverted on both sides)."""

    actor: Actor
    positions: tuple[int, ...]
    reason: str = ""
    on_shortfall: str = "refuse"  # or "clamp": take back only what members still hold
    # Filled by the service with the members the reverted events touched.
    touched: tuple[int, ...] = ()

    def members(self) -> tuple[int, ...]:
        return self.touched


AnyCommand = (
    Join
    | GrantMessageXp
    | VoiceTick
    | ReactionReceived
    | RecordGame
    | ClaimDaily
    | RewardInvite
    | Transfer
    | AdminGrant
    | AdminTake
    | ImportXp
    | GrantItem
    | UseItem
    | IssueWarning
    | PardonWarning
    | ExpireWarning
    | ChangeConfig
    | Revert
)
