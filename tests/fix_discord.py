"""Lightweight fakes of what command callbacks touch on a `discord.Interaction`, and a fixture
that runs the gateway's cogs over a real ledger (fresh database, a running batcher).

A callback is called directly, as the command tree would after Discord's own checks:
`await invoke(command, interaction, **options)`. Skipping the tree is deliberate: it is how a
client that ignores default permissions looks from the server, so the server-side checks must
hold on their own.
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

with warnings.catch_warnings():
    # discord.py imports `audioop` (voice support, unused here), deprecated since Python 3.11;
    # `filterwarnings = error` would otherwise fail the import. Once imported, it is cached.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

from gateway.bot import command_cogs
from gateway.config_commands import ConfigCommands
from gateway.economy_commands import EconomyCommands
from gateway.interactions import CommandDeps, handle_error
from gateway.member_commands import MemberCommands
from gateway.moderation_commands import ModerationCommands
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.runtime import Services
from tests.fix_db import LedgerEnv

GUILD = 5555
_snowflakes = itertools.count(900_000_000_000_000_001)

MEMBER = discord.Permissions(send_messages=True, read_messages=True)
MODERATOR = discord.Permissions(moderate_members=True, send_messages=True)
ADMIN = discord.Permissions(manage_guild=True, moderate_members=True, send_messages=True)


def snowflake() -> int:
    """A fresh, increasing Discord-style id."""
    return next(_snowflakes)


@dataclass
class FakeUser:
    """A guild member as callbacks see it."""

    id: int
    display_name: str = "Member"
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def name(self) -> str:
        return self.display_name


@dataclass
class FakeRole:
    """A role option."""

    id: int

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"


@dataclass
class FakeChannel:
    """A channel option."""

    id: int

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"


@dataclass
class Sent:
    """One thing the bot said: how (`message`, `edit`, `followup`, `defer`) and what."""

    how: str
    content: str | None = None
    embed: discord.Embed | None = None
    view: discord.ui.View | None = None
    file: discord.File | None = None
    ephemeral: bool = False

    def text(self) -> str:
        """Content plus the embed's title, description and fields, for assertions."""
        parts = [self.content or ""]
        if self.embed is not None:
            parts += [self.embed.title or "", self.embed.description or ""]
            parts += [f"{f.name} {f.value}" for f in self.embed.fields]
            if self.embed.footer and self.embed.footer.text:
                parts.append(self.embed.footer.text)
        return "\n".join(p for p in parts if p)


_UNSET: Any = discord.utils.MISSING


class FakeResponse:
    """`interaction.response`: records the one response an interaction may get."""

    def __init__(self, log: list[Sent]) -> None:
        self._log = log
        self._done = False

    def is_done(self) -> bool:
        return self._done

    def _respond(self) -> None:
        if self._done:
            raise discord.InteractionResponded(None)  # type: ignore[arg-type]
        self._done = True

    async def send_message(
        self,
        content: str | None = None,
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        file: discord.File | None = None,
        ephemeral: bool = False,
        **_: Any,
    ) -> None:
        self._respond()
        self._log.append(Sent("message", content, embed, view, file, ephemeral))

    async def edit_message(
        self,
        *,
        content: str | None = _UNSET,
        embed: discord.Embed | None = _UNSET,
        view: discord.ui.View | None = _UNSET,
        **_: Any,
    ) -> None:
        self._respond()
        self._log.append(
            Sent(
                "edit",
                None if content is _UNSET else content,
                None if embed is _UNSET else embed,
                None if view is _UNSET else view,
            )
        )

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self._respond()
        self._log.append(Sent("defer", ephemeral=ephemeral))


class FakeFollowup:
    """`interaction.followup`: messages after the response."""

    def __init__(self, log: list[Sent]) -> None:
        self._log = log

    async def send(
        self,
        content: str | None = None,
        *,
        embed: discord.Embed | None = None,
        view: discord.ui.View | None = None,
        file: discord.File | None = None,
        ephemeral: bool = False,
        **_: Any,
    ) -> None:
        self._log.append(Sent("followup", content, embed, view, file, ephemeral))


@dataclass
class FakeInteraction:
    """What callbacks read from an interaction, and everything they answered."""

    user: FakeUser
    permissions: discord.Permissions = field(default_factory=lambda: MEMBER)
    guild_id: int | None = GUILD
    id: int = field(default_factory=snowflake)
    namespace: app_commands.Namespace | Any = None
    type: discord.InteractionType = discord.InteractionType.application_command
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.response = FakeResponse(self.sent)
        self.followup = FakeFollowup(self.sent)

    async def edit_original_response(self, **kwargs: Any) -> None:
        self.sent.append(Sent("edit_original", kwargs.get("content"), view=kwargs.get("view")))

    @property
    def last(self) -> Sent:
        """The latest thing said."""
        assert self.sent, "the callback said nothing"
        return self.sent[-1]


async def invoke(command: Any, interaction: FakeInteraction, **options: Any) -> None:
    """Call a slash command's callback the way the tree does, bound to its cog."""
    await command.callback(command.binding, interaction, **options)


@dataclass
class GatewayEnv:
    """The command cogs over a ledger on a fresh database, with a running batcher."""

    env: LedgerEnv
    services: Services
    deps: CommandDeps
    member: MemberCommands
    moderation: ModerationCommands
    economy: EconomyCommands
    config: ConfigCommands

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the session loop (the batcher runs while it does)."""
        return self.env.run(coro)

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Query the database directly (assertions)."""
        return self.env.sql(query, params)

    def call(self, command: Any, interaction: FakeInteraction, **options: Any) -> FakeInteraction:
        """Invoke a command's callback and return the interaction with what it said."""
        self.run(invoke(command, interaction, **options))
        return interaction

    def call_like_tree(
        self, command: Any, interaction: FakeInteraction, **options: Any
    ) -> BaseException | None:
        """Invoke as the command tree does: an exception goes to the one error handler (and is
        returned, so the test can check its type)."""

        async def go() -> BaseException | None:
            try:
                await invoke(command, interaction, **options)
            except Exception as exc:
                await handle_error(interaction, app_commands.CommandInvokeError(command, exc))  # type: ignore[arg-type]
                return exc
            return None

        return self.run(go())

    def events(self, command_id: str | int) -> list[str]:
        """Types of the events a command appended, in order."""
        rows = self.sql(
            "SELECT type FROM events WHERE guild_id = %s AND meta->>'command_id' = %s "
            "ORDER BY position",
            (GUILD, str(command_id)),
        )
        return [str(r[0]) for r in rows]


@pytest.fixture
def gateway(env: LedgerEnv) -> Iterator[GatewayEnv]:
    """Command cogs wired to a real ledger, as `LedgerBot.setup_hook` wires them."""
    ingestor = BatchIngestor(env.store)
    batcher = CommandBatcher(ingestor)
    services = Services(env.store.pool, env.store, env.ledger, ingestor, batcher)

    async def start() -> asyncio.Task[None]:
        return asyncio.create_task(batcher.run())

    runner = env.run(start())
    deps = CommandDeps(services)
    cogs = {type(cog): cog for cog in command_cogs(deps)}
    yield GatewayEnv(
        env,
        services,
        deps,
        member=cogs[MemberCommands],  # type: ignore[arg-type]
        moderation=cogs[ModerationCommands],  # type: ignore[arg-type]
        economy=cogs[EconomyCommands],  # type: ignore[arg-type]
        config=cogs[ConfigCommands],  # type: ignore[arg-type]
    )

    async def stop() -> None:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    env.run(stop())
