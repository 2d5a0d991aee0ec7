"""Gateway test helpers: running services over the test database, lightweight fakes of the
discord.py objects the listeners read, and a fake side-effect sender that deduplicates by nonce
the way Discord does."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.side_effects import Delivery, GiveUp
from ledger.ingest import BatchIngestor, CommandBatcher
from ledger.runtime import Services
from tests.fix_db import LedgerEnv


@contextlib.asynccontextmanager
async def running_services(env: LedgerEnv) -> AsyncIterator[Services]:
    """`Services` over the test database with the batcher running (as `open_services` does)."""
    ingestor = BatchIngestor(env.store)
    batcher = CommandBatcher(ingestor)
    task = asyncio.create_task(batcher.run())
    try:
        yield Services(env.store.pool, env.store, env.ledger, ingestor, batcher)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- discord.py look-alikes: only the attributes the listeners read ------------------------------


@dataclass(eq=False)
class FakeRole:
    id: int

    def is_default(self) -> bool:
        return False


@dataclass(eq=False)
class FakeChannel:
    id: int
    members: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class FakeGuild:
    id: int
    members: dict[int, Any] = field(default_factory=dict)
    current_invites: list[Any] = field(default_factory=list)
    voice_channels: list[FakeChannel] = field(default_factory=list)
    stage_channels: list[FakeChannel] = field(default_factory=list)
    afk_channel: FakeChannel | None = None

    def get_member(self, member_id: int) -> Any:
        return self.members.get(member_id)

    async def invites(self) -> list[Any]:
        return list(self.current_invites)


@dataclass(eq=False)
class FakeMember:
    id: int
    guild: FakeGuild
    bot: bool = False
    roles: list[FakeRole] = field(default_factory=list)
    voice: Any = None
    joined_at: datetime | None = None

    def __post_init__(self) -> None:
        self.guild.members[self.id] = self


@dataclass(eq=False)
class FakeMessage:
    id: int
    author: Any
    channel: FakeChannel
    guild: FakeGuild | None
    webhook_id: int | None = None
    system: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def is_system(self) -> bool:
        return self.system


@dataclass(eq=False)
class FakeVoiceState:
    channel: FakeChannel | None = None
    self_mute: bool = False
    self_deaf: bool = False
    mute: bool = False
    deaf: bool = False
    suppress: bool = False


@dataclass(eq=False)
class FakeReaction:
    """A `RawReactionActionEvent`."""

    guild_id: int | None
    channel_id: int
    message_id: int
    user_id: int
    message_author_id: int | None
    member: Any = None


@dataclass(eq=False)
class FakeInvite:
    code: str
    inviter: Any
    uses: int
    max_uses: int = 0
    guild: FakeGuild | None = None


@dataclass(eq=False)
class FakeBot:
    guilds: list[FakeGuild] = field(default_factory=list)

    def get_guild(self, guild_id: int) -> FakeGuild | None:
        return next((g for g in self.guilds if g.id == guild_id), None)


# --- the side-effect sender -------------------------------------------------------------------


class Killed(BaseException):
    """The process died right after a send (nothing after it runs, not even cleanup)."""


@dataclass
class FakeSender:
    """Records every send; `delivered` keeps one per nonce, as Discord's nonce dedup does.

    `fail` makes a key fail that many times; `give_up` abandons keys; `block_at` makes the
    n-th send (1-based) wait until cancelled, setting `blocked` first; `kill_at` raises `Killed`
    after the n-th send went out.
    """

    sends: list[Delivery] = field(default_factory=list)
    delivered: dict[str, Delivery] = field(default_factory=dict)
    fail: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    give_up: set[tuple[int, int, str]] = field(default_factory=set)
    block_at: int | None = None
    kill_at: int | None = None
    blocked: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, delivery: Delivery) -> None:
        self.sends.append(delivery)
        if delivery.key in self.give_up:
            raise GiveUp("member left")
        if self.fail[delivery.key] > 0:
            self.fail[delivery.key] -= 1
            raise RuntimeError("Discord is unavailable")
        if self.block_at == len(self.sends):
            self.blocked.set()
            await asyncio.Event().wait()  # until the dispatcher is cancelled
        self.delivered.setdefault(delivery.nonce, delivery)
        if self.kill_at == len(self.sends):
            raise Killed

    def delivered_keys(self) -> list[tuple[int, int, str]]:
        return sorted(d.key for d in self.delivered.values())


@pytest.fixture
def fake_sender() -> FakeSender:
    """A fresh fake side-effect sender."""
    return FakeSender()
