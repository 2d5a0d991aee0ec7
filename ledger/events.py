"""Event types: frozen, tagged msgspec Structs, the only facts the ledger records.

Each event is stored as jsonb (its msgspec encoding, tag included) with its type and schema
version in their own columns. Events hold IDs and amounts, never names. Schemas evolve by adding
fields with defaults; a change of meaning is a new version with an upcaster in `UPCASTERS`.
Every decision (random roll, clock read, config value in force) is a field, so folding never
computes one again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=str.lower):
    """Base of every event: the member (or 0 for guild-level events) and the decision time."""

    member_id: int
    at: datetime


# --- membership and LC -------------------------------------------------------------------------


class MemberJoined(Event, frozen=True, kw_only=True, tag="member_joined"):
    """First interaction: the wallet opens with the starting balance (minted)."""

    starting_balance: int


class LcMinted(Event, frozen=True, kw_only=True, tag="lc_minted"):
    """LC created for a member: daily gift, invite reward, admin grant."""

    amount: int
    reason: str  # "daily" | "invite" | "admin" | "import"
    actor_id: int = 0
    note: str = ""


class LcBurned(Event, frozen=True, kw_only=True, tag="lc_burned"):
    """LC destroyed from a member's wallet: admin take."""

    amount: int
    reason: str  # "admin"
    actor_id: int = 0
    note: str = ""


class DailyClaimed(Event, frozen=True, kw_only=True, tag="daily_claimed"):
    """The daily gift: `amount` LC minted, `day` is the UTC date's ordinal."""

    day: int
    streak: int
    amount: int


class InviteRewarded(Event, frozen=True, kw_only=True, tag="invite_rewarded"):
    """An invite reward, recorded on both the inviter's and the invitee's stream."""

    other_id: int
    side: str  # "inviter" | "invitee"
    amount: int


class TransferSent(Event, frozen=True, kw_only=True, tag="transfer_sent"):
    """Debit half of a transfer; its credit half commits in the same transaction."""

    to_id: int
    amount: int


class TransferReceived(Event, frozen=True, kw_only=True, tag="transfer_received"):
    """Credit half of a transfer."""

    from_id: int
    amount: int


# --- XP and levels ------------------------------------------------------------------------------


class XpGranted(Event, frozen=True, kw_only=True, tag="xp_granted"):
    """XP earned: `xp` = `base` * `multiplier_pct` / 100, both recorded as decided."""

    source: str  # "message" | "voice" | "reaction" | "admin" | "quest" | "import"
    base: int
    multiplier_pct: int
    xp: int
    channel_id: int = 0
    ref_id: int = 0  # message id for message/reaction XP
    seconds: int = 0  # voice seconds credited
    actor_id: int = 0
    source_ref: str = ""  # for imports: the digest of the imported data


class GamePlayed(Event, frozen=True, kw_only=True, tag="game_played"):
    """A game result: XP (with any item multiplier, consumed here), bet burned, payout minted."""

    game: str
    won: bool
    base_xp: int
    multiplier_pct: int
    xp: int
    bet: int
    payout: int


class LevelChanged(Event, frozen=True, kw_only=True, tag="level_changed"):
    """The member's level moved (up on XP, down only through a revert)."""

    old_level: int
    new_level: int


# --- items --------------------------------------------------------------------------------------


class ItemGranted(Event, frozen=True, kw_only=True, tag="item_granted"):
    """Items added to the inventory."""

    item: str
    quantity: int
    source: str  # "admin" | "game" | "shop" | "quest"
    actor_id: int = 0


class JackpotOpened(Event, frozen=True, kw_only=True, tag="jackpot_opened"):
    """One jackpot used: `amount` LC (the recorded roll) minted."""

    item: str
    amount: int


class MultiplierActivated(Event, frozen=True, kw_only=True, tag="multiplier_activated"):
    """One multiplier item used: games XP * `factor_pct`/100 for the next `games` games."""

    item: str
    factor_pct: int
    games: int


# --- moderation ---------------------------------------------------------------------------------


class WarningIssued(Event, frozen=True, kw_only=True, tag="warning_issued"):
    """A moderator's warning; it counts as active until pardoned or `expires_at`."""

    warning_id: str
    moderator_id: int
    reason: str
    expires_at: datetime


class WarningPardoned(Event, frozen=True, kw_only=True, tag="warning_pardoned"):
    """A warning withdrawn by a moderator."""

    warning_id: str
    moderator_id: int
    reason: str = ""


class WarningExpired(Event, frozen=True, kw_only=True, tag="warning_expired"):
    """A warning reached its expiry (appended by the scheduler)."""

    warning_id: str


class ThresholdReached(Event, frozen=True, kw_only=True, tag="threshold_reached"):
    """Active warnings reached the configured threshold: the action to take."""

    active_warnings: int
    action: str  # "timeout"
    duration_minutes: int


# --- guild level --------------------------------------------------------------------------------


class ConfigChanged(Event, frozen=True, kw_only=True, tag="config_changed"):
    """A guild setting changed (member_id is 0; the actor is recorded)."""

    key: str
    value: Any
    actor_id: int


class Reverted(Event, frozen=True, kw_only=True, tag="reverted"):
    """Compensates the event at `position`: the inverse deltas it applies, as decided."""

    position: int
    lc_delta: int
    xp_delta: int
    item: str = ""
    item_delta: int = 0
    actor_id: int = 0
    reason: str = ""
    shortfall: int = 0  # LC that could not be taken back (revert with on_shortfall=clamp)
    item_shortfall: int = 0


AnyEvent = (
    MemberJoined
    | LcMinted
    | LcBurned
    | DailyClaimed
    | InviteRewarded
    | TransferSent
    | TransferReceived
    | XpGranted
    | GamePlayed
    | LevelChanged
    | ItemGranted
    | JackpotOpened
    | MultiplierActivated
    | WarningIssued
    | WarningPardoned
    | WarningExpired
    | ThresholdReached
    | ConfigChanged
    | Reverted
)

EVENT_TYPES: dict[str, type[Event]] = {str(t.__struct_config__.tag): t for t in AnyEvent.__args__}

# Current schema version of each event type. Bump it, and register an upcaster from the
# previous version, whenever a field changes meaning.
SCHEMA_VERSIONS: dict[str, int] = dict.fromkeys(EVENT_TYPES, 1)

# (type, from_version) -> pure function turning that version's payload into the next version's.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def event_type(event: Event) -> str:
    """The stored type name (the msgspec tag) of an event."""
    return event.__struct_config__.tag  # type: ignore[return-value]


def encode(event: Event) -> bytes:
    """The jsonb payload of an event (tag included)."""
    return _encoder.encode(event)


def decode(data: bytes | str, type_name: str = "", schema_version: int = 0) -> AnyEvent:
    """Decode a stored payload, upcasting it first when it was written by an older schema."""
    current = SCHEMA_VERSIONS.get(type_name, 0)
    if schema_version and schema_version < current:
        payload: dict[str, Any] = msgspec.json.decode(data)
        for version in range(schema_version, current):
            payload = UPCASTERS[(type_name, version)](payload)
        upcast: AnyEvent = msgspec.convert(payload, AnyEvent)
        return upcast
    decoded: AnyEvent = _decoder.decode(data)
    return decoded


class Meta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who and what caused an event: stored beside the payload, never folded."""

    command_id: str
    actor_id: int = 0
    source: str = ""


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read back from the log, with its place in it."""

    position: int
    tx: int
    guild_id: int
    stream: int
    version: int
    event: AnyEvent
    meta: Meta
    recorded_at: datetime


_meta_decoder = msgspec.json.Decoder(Meta)


def encode_meta(meta: Meta) -> bytes:
    """The jsonb form of an event's meta."""
    return _encoder.encode(meta)


def decode_meta(data: bytes | str) -> Meta:
    """Decode a stored meta."""
    return _meta_decoder.decode(data)
