"""The economy's rules: `decide(command, config, states) -> Decision`, pure and synchronous."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger import commands as cmd
from ledger import events as ev
from ledger.guild_config import GuildConfig
from ledger.member import MemberState
from ledger.rules import admin, items, moderation, wallet, xp
from ledger.rules.draft import Decision, Draft

__all__ = ["Decision", "decide"]


def decide(
    command: cmd.AnyCommand,
    config: GuildConfig,
    states: Mapping[int, MemberState],
    originals: Sequence[ev.Recorded] = (),
) -> Decision:
    """The events `command` produces given the guild's config and its members' states.

    Raises a `LedgerError` when the command is refused; nothing is appended then.
    """
    draft = Draft(config, states)
    match command:
        case cmd.Join():
            return wallet.join(draft, command)
        case cmd.GrantMessageXp():
            return xp.message_xp(draft, command)
        case cmd.VoiceTick():
            return xp.voice_tick(draft, command)
        case cmd.ReactionReceived():
            return xp.reaction(draft, command)
        case cmd.RecordGame():
            return xp.game(draft, command)
        case cmd.ClaimDaily():
            return wallet.daily(draft, command)
        case cmd.RewardInvite():
            return wallet.invite(draft, command)
        case cmd.Transfer():
            return wallet.transfer(draft, command)
        case cmd.AdminGrant():
            return admin.grant(draft, command)
        case cmd.AdminTake():
            return admin.take(draft, command)
        case cmd.ImportXp():
            return admin.import_xp(draft, command)
        case cmd.GrantItem():
            return items.grant(draft, command)
        case cmd.UseItem():
            return items.use(draft, command)
        case cmd.IssueWarning():
            return moderation.issue(draft, command)
        case cmd.PardonWarning():
            return moderation.pardon(draft, command)
        case cmd.ExpireWarning():
            return moderation.expire(draft, command)
        case cmd.ChangeConfig():
            return admin.configure(draft, command)
        case cmd.Revert():
            return admin.revert(draft, command, originals)
    raise TypeError(f"not a command: {command!r}")
