"""Per-member slash-command rate limits: a sliding minute, the guild's configured limit."""

from __future__ import annotations

import msgspec
import pytest

from gateway.interactions import LedgerTree
from gateway.rate_limit import CommandRateLimit, SlidingWindow
from ledger.guild_config import DEFAULT_CONFIG, GuildConfig
from tests.fix_db import LedgerEnv
from tests.fix_discord import FakeInteraction, FakeUser


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_allows_the_limit_per_minute_per_member() -> None:
    clock = Clock()
    window = SlidingWindow(clock)
    assert [window.acquire((1, 7), 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert window.acquire((1, 7), 3) == pytest.approx(60.0)
    assert window.acquire((1, 8), 3) == 0.0  # another member is not affected
    assert window.acquire((2, 7), 3) == 0.0  # nor the same member in another guild
    clock.now += 30
    assert window.acquire((1, 7), 3) == pytest.approx(30.0)
    clock.now += 30.001
    assert window.acquire((1, 7), 3) == 0.0
    assert all(window.acquire((1, 9), 0) == 0.0 for _ in range(1000))  # 0 means no limit


def test_the_tree_refuses_a_member_over_the_limit_ephemerally(env: LedgerEnv) -> None:
    clock = Clock()
    loads: list[int] = []

    async def config(guild_id: int) -> GuildConfig:
        loads.append(guild_id)
        return msgspec.structs.replace(DEFAULT_CONFIG, command_rate_per_minute=2)

    tree = LedgerTree.__new__(LedgerTree)  # no Discord client: only the check is exercised
    tree.in_flight = type("InFlight", (), {"closing": False, "enter": lambda self: None})()
    tree.rate_limit = CommandRateLimit(config, clock=clock)
    member = FakeUser(id=42)
    results = []
    for _ in range(3):
        interaction = FakeInteraction(user=member)
        results.append((env.run(tree.interaction_check(interaction)), interaction))
    assert [allowed for allowed, _ in results] == [True, True, False]
    refused = results[2][1].last
    assert refused.ephemeral and "try again in 60 s" in (refused.content or "")
    assert len(loads) == 1  # the guild's config is cached, not read per command
    clock.now += 61
    assert env.run(tree.interaction_check(FakeInteraction(user=member)))
