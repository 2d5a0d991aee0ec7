"""MEE6 import, export with digest, and forget, through the CLI entry point."""

from __future__ import annotations

import http.server
import json
import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from ledger.export import check_export
from tests.fix_db import LedgerEnv

G = 5555


def mee6_level(xp: int) -> int:
    """MEE6's level, computed independently of ledger.levels."""
    level = 0
    while xp >= 5 * level * level + 50 * level + 100:
        xp -= 5 * level * level + 50 * level + 100
        level += 1
    return level


def mee6_pages(players: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    print(f"mee6 fixture seed {seed}", file=sys.stderr)
    rows = []
    for n in range(players):
        xp = rng.randint(0, 400_000)
        rows.append(
            {
                "id": str(10**17 + n),
                "username": f"player{n}",
                "xp": xp,
                "level": mee6_level(xp),
                "message_count": rng.randint(0, 9000),
                "detailed_xp": [0, 0, xp],
            }
        )
    rows.sort(key=lambda r: -int(r["xp"]))  # type: ignore[call-overload]
    return [
        json.dumps({"page": i, "players": rows[i * 100 : (i + 1) * 100]}).encode()
        for i in range((players + 99) // 100)
    ]


@pytest.fixture
def cli_env(env: LedgerEnv, monkeypatch: pytest.MonkeyPatch) -> LedgerEnv:
    monkeypatch.setenv("DATABASE_URL", env.url)
    return env


def test_mee6_import_shows_mee6_levels_and_reimport_is_a_no_op(
    cli_env: LedgerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for i, page in enumerate(mee6_pages(300, seed=3)):
        files.append(tmp_path / f"page{i}.json")
        files[-1].write_bytes(page)
    assert main(["import", "mee6", str(G), *map(str, files), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["players"] == 300 and first["level_mismatches"] == 0
    zero_xp = sum(1 for p in pages_players(files) if p["xp"] == 0)
    assert first["imported"] == 300 - zero_xp
    levels = dict(
        cli_env.sql("SELECT stream, (state->>'level')::int FROM streams WHERE stream > 0")
    )
    for player in pages_players(files):
        if player["xp"]:
            assert levels[int(player["id"])] == player["level"]
    count = cli_env.sql("SELECT count(*) FROM events")[0][0]
    assert main(["import", "mee6", str(G), *map(str, files), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["imported"] == 0
    assert cli_env.sql("SELECT count(*) FROM events")[0][0] == count
    names = cli_env.sql("SELECT count(*) FROM member_profiles WHERE guild_id = %s", (G,))
    assert names[0][0] == 300


def pages_players(files: list[Path]) -> Iterator[dict[str, object]]:
    for path in files:
        yield from json.loads(path.read_bytes())["players"]


def test_mee6_fetch_over_http(cli_env: LedgerEnv, capsys: pytest.CaptureFixture[str]) -> None:
    pages = [*mee6_pages(150, seed=4), json.dumps({"players": []}).encode()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = int(self.path.rsplit("page=", 1)[1])
            body = pages[min(page, len(pages) - 1)]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/lb/{{guild_id}}?page={{page}}"
        assert main(["import", "mee6", str(G), "--fetch", "--url", url, "--json"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert json.loads(capsys.readouterr().out)["players"] == 150


def test_bad_import_file_is_refused_and_writes_nothing(
    cli_env: LedgerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"players": [{"id": "x1", "xp": 5}]}')
    assert main(["import", "mee6", str(G), str(bad)]) == 1
    assert "not a number" in capsys.readouterr().err
    assert cli_env.sql("SELECT count(*) FROM events")[0][0] == 0


def test_export_digest_detects_a_changed_file(
    cli_env: LedgerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "p.json"
    page.write_bytes(mee6_pages(20, seed=5)[0])
    assert main(["import", "mee6", str(G), str(page)]) == 0
    out = tmp_path / "export.jsonl"
    assert main(["export", str(G), "--output", str(out)]) == 0
    check = cli_env.run(check_export(cli_env.store.pool, out))
    assert check.ok and check.events == cli_env.sql("SELECT count(*) FROM events")[0][0]
    lines = out.read_text().splitlines(keepends=True)
    # a superuser-style edit of one event's XP in the file: valid JSON, different content
    lines[1] = lines[1].replace('"xp": ', '"xp": 9', 1)
    out.write_text("".join(lines))
    bad = cli_env.run(check_export(cli_env.store.pool, out))
    assert not bad.ok
    assert any("digest" in p for p in bad.problems)
    assert any("differs" in p for p in bad.problems)
    out.write_text("".join(lines[:-1]))  # trailer cut off
    assert not cli_env.run(check_export(cli_env.store.pool, out)).ok


def test_forget_erases_names_and_keeps_the_log(
    cli_env: LedgerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "p.json"
    page.write_bytes(mee6_pages(10, seed=6)[0])
    assert main(["import", "mee6", str(G), str(page)]) == 0
    member = cli_env.sql("SELECT member_id FROM member_profiles LIMIT 1")[0][0]
    events = cli_env.sql("SELECT count(*), sum(length(data::text)) FROM events")
    balances = cli_env.sql("SELECT sum((state->>'xp')::bigint) FROM streams")
    assert main(["forget", str(member)]) == 0
    assert cli_env.sql("SELECT count(*) FROM member_profiles WHERE member_id = %s", (member,)) == [
        (0,)
    ]
    assert cli_env.sql("SELECT count(*), sum(length(data::text)) FROM events") == events
    assert cli_env.sql("SELECT sum((state->>'xp')::bigint) FROM streams") == balances


def test_stats_totals_match_the_state_and_plot_renders(
    cli_env: LedgerEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger import commands as cmd

    admin = cmd.Actor(1, is_moderator=True, is_admin=True)
    for n, (member, lc) in enumerate([(2, 100), (3, 50), (2, 25)]):
        cli_env.run(
            cli_env.ledger.execute(
                cmd.AdminGrant(guild_id=G, command_id=f"g{n}", member_id=member, actor=admin, lc=lc)
            )
        )
    cli_env.run(
        cli_env.ledger.execute(
            cmd.Transfer(guild_id=G, command_id="t", from_id=2, to_id=3, amount=30)
        )
    )
    plot = tmp_path / "stats.png"
    assert main(["stats", str(G), "--json", "--plot", str(plot)]) == 0
    summary = json.loads(capsys.readouterr().out)
    supply = cli_env.sql("SELECT sum((state->>'balance')::bigint) FROM streams WHERE stream > 0")
    assert summary["supply"] == supply[0][0] == 2 * 25 + 175
    assert summary["top_earners"][0] == {"member": 2, "lc": 150}
    assert summary["top_movers"] == [{"member": 2, "lc": 30}, {"member": 3, "lc": 30}]
    assert plot.read_bytes().startswith(b"\x89PNG")
