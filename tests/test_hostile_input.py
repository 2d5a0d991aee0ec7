"""Hostile input: every command type and CLI entry, fed zero, negative, huge and non-integer
amounts, unknown members and items, control characters, 10,000-character text, SQL fragments,
unusual Unicode and other guilds' ids. Each is decided cleanly: accepted, or refused with a
`LedgerError` whose message is short and plain, appending nothing. Nothing else escapes."""

from __future__ import annotations

import itertools
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main
from ledger import commands as cmd
from ledger.errors import LedgerError
from tests.fix_db import LedgerEnv

G, OTHER_GUILD = 6060, 6061
TRIED = itertools.count(1)
HOSTILE_TEXT = [
    "",
    " ",
    "'; DROP TABLE events; --",
    "Robert'); DELETE FROM streams;--",
    "\x00",
    "bell\x07",
    "a" * 10_000,
    "\u202egnp.exe",  # right-to-left override
    "z\u200dw\u200dj",  # zero-width joiners
    "\U0001f4b8" * 50,
    "\ufeff",
    "line\nbreak",
    "%s %(x)s {0}",
    "\ud800",  # a lone surrogate (what an undecodable byte becomes in Python)
    "ok\udcffok",
    "\u0663",  # an Arabic-Indic digit: int() accepts it
]
HOSTILE_INTS = [0, -1, -(2**63), 2**63, 2**64, 10**30, True, False, 1.5, float("nan"), "5", None]

ids = st.one_of(st.integers(1, 6), st.sampled_from(HOSTILE_INTS))
amounts = st.one_of(st.integers(-5, 50), st.sampled_from(HOSTILE_INTS))
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))
items = st.one_of(st.sampled_from(["jackpot", "x2", "x3"]), texts)
guilds = st.sampled_from([G, G, OTHER_GUILD, 0, -1, 2**63, True])
times = st.sampled_from([datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 1)])
actors = st.builds(cmd.Actor, ids, st.booleans(), st.booleans())
command_ids = st.one_of(st.uuids().map(str), st.sampled_from(["", "x" * 200, "\x00id", "bad\nid"]))
fields = {"guild_id": guilds, "command_id": command_ids, "at": times}

COMMANDS = st.one_of(
    st.builds(cmd.Transfer, **fields, from_id=ids, to_id=ids, amount=amounts),
    st.builds(
        cmd.GrantMessageXp,
        **fields,
        member_id=ids,
        channel_id=ids,
        message_id=ids,
        entropy=st.integers(0, 2**48),
    ),
    st.builds(cmd.VoiceTick, **fields, member_id=ids, channel_id=ids, unmuted_humans=amounts),
    st.builds(cmd.ReactionReceived, **fields, author_id=ids, reactor_id=ids, message_id=ids),
    st.builds(
        cmd.RecordGame,
        **fields,
        member_id=ids,
        game=texts,
        won=st.booleans(),
        bet=amounts,
        payout=amounts,
    ),
    st.builds(cmd.ClaimDaily, **fields, member_id=ids),
    st.builds(cmd.RewardInvite, **fields, inviter_id=ids, invitee_id=ids),
    st.builds(
        cmd.AdminGrant, **fields, member_id=ids, actor=actors, lc=amounts, xp=amounts, reason=texts
    ),
    st.builds(cmd.AdminTake, **fields, member_id=ids, actor=actors, lc=amounts, reason=texts),
    st.builds(
        cmd.GrantItem,
        **fields,
        member_id=ids,
        item=items,
        quantity=amounts,
        item_source=texts,
        actor=actors,
    ),
    st.builds(cmd.UseItem, **fields, member_id=ids, item=items, entropy=st.integers(0, 2**48)),
    st.builds(cmd.IssueWarning, **fields, member_id=ids, actor=actors, reason=texts),
    st.builds(
        cmd.PardonWarning, **fields, member_id=ids, actor=actors, warning_id=texts, reason=texts
    ),
    st.builds(cmd.ExpireWarning, **fields, member_id=ids, warning_id=texts),
    st.builds(
        cmd.ChangeConfig,
        **fields,
        actor=actors,
        key=st.one_of(
            st.sampled_from(["daily_amount", "no_xp_channels", "warning_action", "level_roles"]),
            texts,
        ),
        value=st.one_of(amounts, texts, st.lists(amounts, max_size=3)),
        op=st.sampled_from(["set", "add", "remove", "drop"]),
    ),
    st.builds(cmd.ImportXp, **fields, member_id=ids, actor=actors, xp=amounts, source_ref=texts),
    st.builds(
        cmd.Revert,
        **fields,
        actor=actors,
        positions=st.lists(amounts, max_size=4).map(tuple),
        reason=texts,
        on_shortfall=st.sampled_from(["refuse", "clamp", "maybe"]),
    ),
)


def _events(env: LedgerEnv) -> int:
    return int(env.sql("SELECT count(*) FROM events")[0][0])  # type: ignore[call-overload]


@settings(max_examples=400)
@given(command=COMMANDS)
def test_every_command_refuses_hostile_input_cleanly(
    env: LedgerEnv, command: cmd.AnyCommand
) -> None:
    next(TRIED)
    before = _events(env)
    try:
        env.run(env.ledger.execute(command))
    except LedgerError as refused:
        assert refused.message and len(refused.message) <= 300
        assert "Traceback" not in refused.message and "psycopg" not in refused.message
        assert _events(env) == before, f"a refused {type(command).__name__} appended events"


ARGV = [
    ["audit", "-5", "1"],
    ["audit", "1", "2", "--as-of", "yesterday"],
    ["audit", "1", "2", "--at", "'; DROP TABLE events; --"],
    ["replay", "x"],
    ["revert", "1", "--positions", "1,2,abc"],
    ["revert", "1", "--positions", "99999999999999999999999"],
    ["revert", "1"],
    ["revert", "1", "--member", "0"],
    ["import", "mee6", "1"],
    ["import", "mee6", "1", "/nonexistent/page.json"],
    ["import", "mee6", "1", "--fetch", "--url", "file:///etc/passwd"],
    ["export", "0"],
    ["forget", "-3"],
    ["stats", "1e9"],
    ["rebuild", "\x00"],
    ["verify", "--export", "/nonexistent.jsonl"],
    ["demo", "--members", "-1"],
    ["bench", "--only", "P9"],
]


@pytest.mark.parametrize("argv", ARGV, ids=[" ".join(a)[:40] for a in ARGV])
def test_cli_refuses_hostile_arguments_without_a_traceback(
    env: LedgerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", env.url)
    before = _events(env)
    try:
        code = main(argv)
    except SystemExit as usage:  # argparse's own usage errors
        code = int(usage.code or 0)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err
    if code:
        assert err.strip(), f"{argv} failed without saying why"
    assert _events(env) == before


CLI_TRIED = itertools.count(1)
TOKENS = [
    "0", "-1", "1", "2", "3", str(2**63 - 1), str(2**63), str(2**64), "1e9", "1.5", "0x10",
    " 7", "", "1,2,abc", "--yes", "-", *HOSTILE_TEXT[2:],
]  # fmt: skip
numbers = st.one_of(st.integers(-3, 9).map(str), st.sampled_from(TOKENS))
words = st.one_of(st.sampled_from(TOKENS), st.text(max_size=12))


def _with(*options: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    """Any subset of `options` (each a list of tokens), concatenated."""
    return st.tuples(*(st.one_of(st.just([]), o) for o in options)).map(
        lambda parts: [token for part in parts for token in part]
    )


def _opt(flag: str, value: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return value.map(lambda v: [flag, v])


JSON = st.just(["--json"])
COMMAND_LINES = st.one_of(
    st.tuples(st.just(["audit"]), numbers, numbers, _with(_opt("--as-of", words), JSON)).map(
        lambda t: [*t[0], t[1], t[2], *t[3]]
    ),
    st.tuples(numbers, _with(_opt("--at", numbers), _opt("--top", numbers), JSON)).map(
        lambda t: ["replay", t[0], *t[1]]
    ),
    st.tuples(
        numbers,
        st.one_of(_opt("--positions", words), _opt("--actor", numbers), _opt("--member", numbers)),
        _with(
            _opt("--since", words),
            _opt("--until", words),
            _opt("--reason", words),
            _opt("--by", numbers),
            _opt("--on-shortfall", st.sampled_from(["refuse", "clamp", "maybe"])),
            st.just(["--yes"]),
        ),
    ).map(lambda t: ["revert", t[0], *t[1], *t[2]]),
    st.tuples(numbers, _with(_opt("--member", numbers))).map(lambda t: ["export", t[0], *t[1]]),
    st.tuples(numbers, _with(_opt("--guild", numbers), JSON)).map(
        lambda t: ["forget", t[0], *t[1]]
    ),
    st.tuples(numbers, _with(_opt("--top", numbers), JSON)).map(lambda t: ["stats", t[0], *t[1]]),
    st.tuples(numbers, st.lists(st.one_of(words, st.just("/")), max_size=2)).map(
        lambda t: ["import", "mee6", t[0], *t[1]]
    ),
)


@given(argv=COMMAND_LINES)
def test_cli_refuses_hypothesis_built_command_lines(
    env: LedgerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    next(CLI_TRIED)
    monkeypatch.setenv("DATABASE_URL", env.url)
    if not _events(env):  # a little history, so positions and members can exist
        env.run(
            env.ledger.execute(
                cmd.Transfer(guild_id=1, command_id="h", from_id=1, to_id=2, amount=1)
            )
        )
    before = _events(env)
    try:
        code = main(argv)
    except SystemExit as usage:  # argparse's own usage errors
        code = int(usage.code or 0)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (argv, err)
    if code:
        assert err.strip(), f"{argv} failed without saying why"
        assert _events(env) == before, f"a refused {argv} appended events"
    else:
        assert _events(env) == before or argv[0] == "revert"  # only a valid revert appends


def test_report_inputs_tried() -> None:
    tried, lines = next(TRIED) - 1, next(CLI_TRIED) - 1
    print(
        f"hostile inputs tried: {tried} commands + {len(ARGV)} fixed and {lines} generated "
        f"command lines = {tried + len(ARGV) + lines}",
        file=sys.stderr,
    )
    assert tried + lines > 0
