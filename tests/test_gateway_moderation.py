"""Moderator and admin commands: refused server-side for members whose client skipped the default
permissions, effective in the log for those who hold them; reverts previewed before confirming."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.economy_commands import parse_positions
from gateway.embeds import progress_bar
from gateway.views import ConfirmView
from ledger.errors import InvalidInput, LedgerError, NotPermitted
from tests.fix_discord import (
    ADMIN,
    GUILD,
    MEMBER,
    MODERATOR,
    FakeChannel,
    FakeInteraction,
    FakeRole,
    FakeUser,
    GatewayEnv,
)
from tests.fix_projections import project

SPAMMER = FakeUser(102, "Spammer")


def count(gw: GatewayEnv, event_type: str) -> int:
    return int(gw.sql("SELECT count(*) FROM events WHERE type = %s", (event_type,))[0][0])  # type: ignore[call-overload]


def test_members_cannot_warn_even_when_their_client_offers_the_command(gateway: GatewayEnv) -> None:
    attempt = FakeInteraction(FakeUser(101), permissions=MEMBER)
    error = gateway.call_like_tree(gateway.moderation.warn, attempt, member=SPAMMER, reason="spam")
    assert isinstance(error, NotPermitted)
    assert attempt.last.ephemeral and attempt.last.content == "Only moderators can do that."
    assert count(gateway, "warning_issued") == 0
    listing = FakeInteraction(FakeUser(101), permissions=MEMBER)
    assert isinstance(
        gateway.call_like_tree(gateway.moderation.warnings, listing, member=SPAMMER), NotPermitted
    )
    pardon = FakeInteraction(FakeUser(101), permissions=MEMBER)
    error = gateway.call_like_tree(gateway.moderation.pardon, pardon, member=SPAMMER, warning="1")
    assert isinstance(error, NotPermitted)


def test_warn_list_and_pardon(gateway: GatewayEnv) -> None:
    mod = FakeUser(201, "Mod")
    warned = [
        gateway.call(
            gateway.moderation.warn,
            FakeInteraction(mod, permissions=MODERATOR),
            member=SPAMMER,
            reason=f"spam #{n}",
        )
        for n in range(3)
    ]
    assert [gateway.events(w.id) for w in warned[:2]] == [["warning_issued"]] * 2
    assert gateway.events(warned[2].id) == ["warning_issued", "threshold_reached"]
    first = warned[0].last
    assert first.ephemeral and f"`{warned[0].id}`" in (first.content or "")
    assert "1 active warning" in (first.content or "")
    assert "threshold" in (warned[2].last.content or "")

    project(gateway.env)
    listing = gateway.call(
        gateway.moderation.warnings, FakeInteraction(mod, permissions=MODERATOR), member=SPAMMER
    )
    assert listing.last.ephemeral and "3 active" in listing.last.text()
    assert str(warned[0].id) in listing.last.text()

    typing = FakeInteraction(mod, permissions=MODERATOR, namespace=SimpleNamespace(member=SPAMMER))
    choices = gateway.run(gateway.moderation._active_warnings(typing, "#1"))  # type: ignore[arg-type]
    assert [c.value for c in choices] == [str(warned[1].id)]

    pardon = gateway.call(
        gateway.moderation.pardon,
        FakeInteraction(mod, permissions=MODERATOR),
        member=SPAMMER,
        warning=str(warned[0].id),
        reason="appeal",
    )
    assert gateway.events(pardon.id) == ["warning_pardoned"]
    again = FakeInteraction(mod, permissions=MODERATOR)
    error = gateway.call_like_tree(
        gateway.moderation.pardon, again, member=SPAMMER, warning=str(warned[0].id)
    )
    assert isinstance(error, InvalidInput) and "no active warning" in (again.last.content or "")


def test_economy_grant_and_take_need_an_admin(gateway: GatewayEnv) -> None:
    moderator = FakeInteraction(FakeUser(201), permissions=MODERATOR)
    error = gateway.call_like_tree(gateway.economy.grant, moderator, member=SPAMMER, lc=100)
    assert isinstance(error, NotPermitted) and moderator.last.content == "Only admins can do that."
    assert count(gateway, "lc_minted") == 0

    admin = FakeUser(301)
    granted = gateway.call(
        gateway.economy.grant,
        FakeInteraction(admin, permissions=ADMIN),
        member=SPAMMER,
        lc=100,
        xp=500,
        reason="event prize",
    )
    assert gateway.events(granted.id) == [
        "member_joined",
        "lc_minted",
        "xp_granted",
        "level_changed",
    ]
    text = granted.last.content or ""
    assert "Granted 100 LC and 500 XP" in text and "<@102>: 125 LC, 500 XP (level 3)" in text
    assert "<@102> is now level 3." in text

    taken = gateway.call(
        gateway.economy.take, FakeInteraction(admin, permissions=ADMIN), member=SPAMMER, lc=25
    )
    assert gateway.events(taken.id) == ["lc_burned"] and "100 LC" in (taken.last.content or "")
    too_much = FakeInteraction(admin, permissions=ADMIN)
    error = gateway.call_like_tree(gateway.economy.take, too_much, member=SPAMMER, lc=1000)
    assert isinstance(error, LedgerError) and too_much.last.ephemeral


def test_revert_previews_then_appends_on_confirmation(gateway: GatewayEnv) -> None:
    admin = FakeUser(301)
    granted = gateway.call(
        gateway.economy.grant, FakeInteraction(admin, permissions=ADMIN), member=SPAMMER, lc=100
    )
    minted = gateway.sql(
        "SELECT position FROM events WHERE meta->>'command_id' = %s AND type = 'lc_minted'",
        (str(granted.id),),
    )[0][0]

    member_try = FakeInteraction(FakeUser(101), permissions=MEMBER)
    error = gateway.call_like_tree(gateway.economy.revert, member_try, positions=str(minted))
    assert isinstance(error, NotPermitted)

    asked = gateway.call(
        gateway.economy.revert,
        FakeInteraction(admin, permissions=ADMIN),
        positions=f"{minted}",
        reason="mistake",
    )
    preview = asked.last
    assert preview.ephemeral and isinstance(preview.view, ConfirmView)
    assert "<@102>: 25 LC" in preview.text()
    assert count(gateway, "reverted") == 0  # a preview appends nothing

    press = FakeInteraction(admin, permissions=ADMIN)
    gateway.run(preview.view.confirm.callback(press))  # type: ignore[attr-defined]
    assert gateway.events(asked.id) == ["reverted"]
    assert "1 compensating event" in (press.last.content or "")
    # a second press (or a retried interaction) is the same command: nothing more
    gateway.run(preview.view.confirm.callback(FakeInteraction(admin, permissions=ADMIN)))  # type: ignore[attr-defined]
    assert count(gateway, "reverted") == 1


def test_parse_positions() -> None:
    assert parse_positions("12, 15,20-22") == (12, 15, 20, 21, 22)
    for bad in ("", "abc", "5-3", "0", "1-100000"):
        with pytest.raises(InvalidInput):
            parse_positions(bad)


def test_config_changes_go_through_the_ledger(gateway: GatewayEnv) -> None:
    admin = FakeUser(301)

    def as_admin() -> FakeInteraction:
        return FakeInteraction(admin, permissions=ADMIN)

    changed = gateway.call(gateway.config.set, as_admin(), setting="daily_amount", value=80)
    assert gateway.events(changed.id) == ["config_changed"]
    daily = gateway.call(gateway.member.daily, FakeInteraction(FakeUser(101)))
    assert "**80 LC**" in (daily.last.content or "")

    gateway.call(gateway.config.no_xp_channel, as_admin(), channel=FakeChannel(77))
    gateway.call(gateway.config.no_xp_channel, as_admin(), channel=FakeChannel(78))
    gateway.call(gateway.config.no_xp_channel, as_admin(), channel=FakeChannel(77), enabled=False)
    gateway.call(gateway.config.role_multiplier, as_admin(), role=FakeRole(55), percent=150)
    gateway.call(gateway.config.level_role, as_admin(), level=5, role=FakeRole(66))
    gateway.call(gateway.config.level_roles_mode, as_admin(), mode="replace")
    gateway.call(gateway.config.announcements, as_admin(), channel=FakeChannel(88))
    gateway.call(gateway.config.card_colours, as_admin(), accent="#112233")
    config = gateway.run(gateway.deps.guild_config(GUILD))
    assert config.no_xp_channels == frozenset({78})
    assert config.role_multipliers_pct == {55: 150}
    assert config.level_roles == {5: 66} and config.level_roles_mode == "replace"
    assert config.announcement_channel == 88 and config.card_accent == 0x112233

    shown = gateway.call(gateway.config.show, as_admin())
    assert "<#78>" in shown.last.text() and "level 5" in shown.last.text()

    bad = as_admin()
    error = gateway.call_like_tree(gateway.config.set, bad, setting="message_xp_min", value=30)
    assert isinstance(error, InvalidInput)
    assert bad.last.ephemeral and "must not exceed" in (bad.last.content or "")
    colour = as_admin()
    assert isinstance(
        gateway.call_like_tree(gateway.config.card_colours, colour, accent="blue!"), InvalidInput
    )
    assert "#5865F2" in (colour.last.content or "")

    moderator = FakeInteraction(FakeUser(201), permissions=MODERATOR)
    error = gateway.call_like_tree(gateway.config.set, moderator, setting="daily_amount", value=1)
    assert isinstance(error, NotPermitted)
    peek = FakeInteraction(FakeUser(101), permissions=MEMBER)
    assert isinstance(gateway.call_like_tree(gateway.config.show, peek), NotPermitted)


def test_progress_bar() -> None:
    assert progress_bar(0, 100, width=4) == "▱▱▱▱ 0%"
    assert progress_bar(50, 100, width=4) == "▰▰▱▱ 50%"
    assert progress_bar(0, 0, width=4) == "▰▰▰▰ 100%"
