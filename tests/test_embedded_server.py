"""The embedded server's own settings (D22): sized from the machine, written where the server
reads them, applied at start."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from ledger.database import SETTINGS_FILE, server_settings, write_server_settings

GB = 2**30


@pytest.mark.parametrize(
    ("memory", "shared_buffers"),
    [
        (24 * GB, "1024MB"),  # capped: the server shares its machine
        (2 * GB, "512MB"),  # a quarter of the RAM
        (256 * 2**20, "128MB"),  # never below PostgreSQL's own default
        (0, "128MB"),  # RAM unknown
    ],
)
def test_shared_buffers_follow_the_machine(memory: int, shared_buffers: str) -> None:
    assert server_settings(memory)["shared_buffers"] == shared_buffers


def test_settings_are_rewritten_and_included_once(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.conf"
    conf.write_text("shared_buffers = 128MB\n")
    write_server_settings(tmp_path, {"shared_buffers": "512MB"})
    write_server_settings(tmp_path, {"shared_buffers": "256MB"})
    assert (tmp_path / SETTINGS_FILE).read_text().splitlines()[1:] == ["shared_buffers = '256MB'"]
    lines = conf.read_text().splitlines()
    assert lines[0] == "shared_buffers = 128MB"  # initdb's file is kept; the include comes last
    assert lines.count(f"include_if_exists = '{SETTINGS_FILE}'") == 1
    assert lines[-1] == f"include_if_exists = '{SETTINGS_FILE}'"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_embedded_server_runs_with_them(server_url: str) -> None:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL is set: the tests use that server, not the embedded one")
    with psycopg.connect(server_url) as conn:
        row = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()
    assert row is not None
    assert f"{row[0] // 2**20}MB" == server_settings()["shared_buffers"]
