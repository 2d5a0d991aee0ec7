"""Property: for random command sequences, the read tables equal the fold of the log after
catch-up (in random batch sizes) and after a rebuild, and rebuilds are byte-for-byte repeatable."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Literal

from hypothesis import given
from hypothesis import strategies as st

from ledger import commands as cmd
from projections import catch_up, rebuild, verify
from tests.fix_db import LedgerEnv
from tests.fix_projections import (
    KINDS,
    START,
    assert_tables_equal_fold,
    build_command,
    execute_all,
    fresh_ledger,
)

_guilds = itertools.count(10_000)

specs = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(1, 5),  # member
        st.integers(1, 5),  # other member
        st.integers(0, 60),  # size of amounts
        st.integers(0, 2**16),  # entropy: rolls, items, message ids
        st.integers(0, 1500),  # minutes since the previous command
    ),
    min_size=1,
    max_size=30,
)


def _commands(guild: int, drawn: list[tuple[str, int, int, int, int, int]]) -> list[cmd.AnyCommand]:
    at, open_warnings, out = START, [], []
    for i, (kind, member, other, n, entropy, minutes) in enumerate(drawn):
        at += timedelta(minutes=minutes)
        out.append(
            build_command(
                guild, f"p{guild}-{i}", kind, member, other, n, entropy, at, open_warnings
            )
        )
    return out


def _digests(env: LedgerEnv) -> dict[str, str]:
    report = env.run(verify(env.store.pool))
    assert report.ok, [d for t in report.tables for d in t.differences]
    return {t.table: t.digest for t in report.tables}


@given(
    drawn=specs,
    batch_size=st.integers(1, 40),
    chunk_size=st.integers(1, 60),
    order=st.sampled_from(["delivery", "member"]),
)
def test_tables_equal_the_fold_after_catch_up_and_rebuild(
    server_url: str,
    template_db: str,
    aio: asyncio.Runner,
    drawn: list[tuple[str, int, int, int, int, int]],
    batch_size: int,
    chunk_size: int,
    order: Literal["delivery", "member"],
) -> None:
    with fresh_ledger(server_url, template_db, aio) as env:
        _check(env, drawn, batch_size, chunk_size, order)


def _check(
    env: LedgerEnv,
    drawn: list[tuple[str, int, int, int, int, int]],
    batch_size: int,
    chunk_size: int,
    order: Literal["delivery", "member"],
) -> None:
    # Two guilds from the same draw: neither may leak into the other.
    for guild in (next(_guilds), next(_guilds)):
        env.run(execute_all(env, _commands(guild, drawn)))
    env.run(catch_up(env.store.pool, batch_size=batch_size))
    assert_tables_equal_fold(env)
    live = _digests(env)
    env.run(rebuild(env.store.pool, chunk_size=chunk_size, max_rows=chunk_size * 3, order=order))
    assert_tables_equal_fold(env)
    first = _digests(env)
    env.run(rebuild(env.store.pool))
    assert _digests(env) == first == live
