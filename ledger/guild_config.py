"""Per-guild economy settings: defaults, validation, and their fold from `ConfigChanged` events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ledger.errors import InvalidInput
from ledger.events import ConfigChanged
from ledger.levels import MAX_LEVEL


class GuildConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every number of the economy, per guild. Percentages are integers (200 = x2)."""

    # message XP
    message_xp_min: int = 15
    message_xp_max: int = 25
    message_cooldown_seconds: int = 60
    no_xp_channels: frozenset[int] = frozenset()
    no_xp_roles: frozenset[int] = frozenset()
    guild_multiplier_pct: int = 100
    role_multipliers_pct: dict[int, int] = {}
    channel_multipliers_pct: dict[int, int] = {}
    # voice XP: one tick per `voice_tick_seconds` with at least `voice_min_humans` unmuted humans
    voice_xp_per_tick: int = 10
    voice_tick_seconds: int = 120
    voice_min_humans: int = 2
    voice_hourly_bonus_xp: int = 50
    # reactions received
    reaction_xp: int = 5
    reaction_cap_per_message: int = 10
    # games
    game_xp_win: int = 15
    game_xp_loss: int = 5
    # LC
    starting_balance: int = 25
    daily_amount: int = 50
    daily_streak_bonus: int = 10
    daily_streak_cap: int = 7
    invite_reward_inviter: int = 100
    invite_reward_invitee: int = 50
    max_amount: int = 1_000_000_000
    max_balance: int = 1_000_000_000_000
    admin_grant_max_lc: int = 1_000_000
    admin_grant_max_xp: int = 100_000
    # items
    jackpot_amounts: tuple[int, ...] = (25, 50, 100)
    multiplier_games: int = 5
    # warnings
    warning_expiry_days: int = 30
    warning_threshold: int = 3
    warning_action: str = "timeout"
    warning_timeout_minutes: int = 60
    # gateway: level-role rewards {level: role id}, kept ("stack") or only the highest
    # ("replace"); where level-ups are announced (0: the channel the member spoke in);
    # /pay asks for confirmation above this amount; rank card colours (0xRRGGBB)
    level_roles: dict[int, int] = {}
    level_roles_mode: str = "stack"
    announcement_channel: int = 0
    pay_confirm_above: int = 1000
    card_accent: int = 0x5865F2
    card_background: int = 0x2B2D31
    # slash commands a member may run per minute (0: no limit); enforced by the gateway
    command_rate_per_minute: int = 20


DEFAULT_CONFIG = GuildConfig()
_FIELDS = {f.name: f.type for f in msgspec.structs.fields(GuildConfig)}
_NON_NEGATIVE_INT_LIMIT = 10**15
# Tighter bounds, so no combination of settings can overflow a bigint: multipliers are at
# most x100 each, XP amounts per grant at most 100,000.
_MAX_PCT = 10_000
_MAX_XP_SETTING = 100_000
_XP_SETTINGS = frozenset(
    {
        "message_xp_min",
        "message_xp_max",
        "voice_xp_per_tick",
        "voice_hourly_bonus_xp",
        "reaction_xp",
        "game_xp_win",
        "game_xp_loss",
        "admin_grant_max_xp",
    }
)
_AT_LEAST_ONE = frozenset(
    {
        "message_xp_max",
        "voice_tick_seconds",
        "voice_min_humans",
        "multiplier_games",
        "warning_expiry_days",
        "max_amount",
        "max_balance",
        "reaction_cap_per_message",
    }
)
WARNING_ACTIONS = frozenset({"timeout", "none"})
LEVEL_ROLE_MODES = frozenset({"stack", "replace"})
_MAX_COLOUR = 0xFFFFFF
_MAX_ID = 2**63 - 1


def _describe(kind: Any) -> str:
    """A setting's type in words, for error messages."""
    if kind is int:
        return "a whole number"
    if kind is str:
        return "text"
    origin = getattr(kind, "__origin__", None)
    if origin is dict:
        return "a mapping of ids to whole numbers"
    if origin in (frozenset, tuple, list):
        return "a list of ids or whole numbers"
    return "a different kind of value"


def _check_ints(key: str, values: Iterable[object], low: int, high: int) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"Values of `{key}` must be whole numbers from {low} to {high}.")


def validate_setting(config: GuildConfig, key: str, value: Any) -> Any:
    """Return `value` converted to the setting's type, or raise InvalidInput."""
    if key not in _FIELDS:
        raise InvalidInput(f"Unknown setting `{key}`.")
    try:
        converted = msgspec.convert(value, _FIELDS[key], strict=False)
    except msgspec.ValidationError:
        raise InvalidInput(f"Setting `{key}` needs {_describe(_FIELDS[key])}.") from None
    if key == "warning_action" and converted not in WARNING_ACTIONS:
        raise InvalidInput(f"`warning_action` is one of: {', '.join(sorted(WARNING_ACTIONS))}.")
    if key == "level_roles_mode" and converted not in LEVEL_ROLE_MODES:
        raise InvalidInput("`level_roles_mode` is `stack` or `replace`.")
    if key == "level_roles":  # {level: role id}
        _check_ints(key, converted.keys(), 1, MAX_LEVEL)
        _check_ints(key, converted.values(), 1, _MAX_ID)
    elif key.startswith("card_"):
        _check_ints(key, [converted], 0, _MAX_COLOUR)
    elif isinstance(converted, dict):  # {role or channel id: percent}
        _check_ints(key, converted.keys(), 1, _MAX_ID)
        _check_ints(key, converted.values(), 0, _MAX_PCT)
    elif isinstance(converted, frozenset):  # channel or role ids
        _check_ints(key, converted, 1, _MAX_ID)
    elif isinstance(converted, tuple):  # jackpot amounts
        _check_ints(key, converted, 1, _NON_NEGATIVE_INT_LIMIT)
    elif isinstance(converted, int):
        high = (
            _MAX_PCT
            if key.endswith("_pct")
            else _MAX_XP_SETTING
            if key in _XP_SETTINGS
            else _NON_NEGATIVE_INT_LIMIT
        )
        _check_ints(key, [converted], 1 if key in _AT_LEAST_ONE else 0, high)
    candidate = msgspec.structs.replace(config, **{key: converted})
    if candidate.message_xp_min > candidate.message_xp_max:
        raise InvalidInput("`message_xp_min` must not exceed `message_xp_max`.")
    if key == "jackpot_amounts" and not converted:
        raise InvalidInput("`jackpot_amounts` needs at least one amount.")
    return converted


def evolve_config(config: GuildConfig, event: ConfigChanged) -> GuildConfig:
    """Apply one recorded setting change (already validated when it was decided)."""
    value = msgspec.convert(event.value, _FIELDS[event.key], strict=False)
    return msgspec.structs.replace(config, **{event.key: value})
