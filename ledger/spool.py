"""A durable local spool for XP grants while PostgreSQL is unreachable.

Message, voice and reaction XP must not be lost to an outage, and are safe to apply late:
their decisions (roll, cooldown) are made when they are replayed, from the time recorded in the
command, and their ids make a replay idempotent. So during an outage they are appended to a
file, fsync'd before the caller hears "spooled", and replayed when the database answers again.
Money-moving commands are never spooled: they fail fast instead.

Files are JSON Lines, one command per line with its kind. A torn last line (a crash mid-write)
is skipped; every complete line survives a crash, because each write is fsync'd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec

from ledger import commands as cmd

log = logging.getLogger(__name__)

SpoolableCommand = cmd.GrantMessageXp | cmd.VoiceTick | cmd.ReactionReceived
SPOOLABLE = (cmd.GrantMessageXp, cmd.VoiceTick, cmd.ReactionReceived)
_KINDS: dict[str, type[SpoolableCommand]] = {
    "message": cmd.GrantMessageXp,
    "voice": cmd.VoiceTick,
    "reaction": cmd.ReactionReceived,
}
_KIND_OF = {kind: name for name, kind in _KINDS.items()}


class _Line(msgspec.Struct, frozen=True):
    kind: str
    command: msgspec.Raw


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Line)


class Spool:
    """Append-only spool files in `directory`: `active.jsonl` takes writes; a replay first
    renames it to `replaying-<ns>.jsonl`, so writes during a replay go to a fresh file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    @property
    def active(self) -> Path:
        """The file new grants are appended to."""
        return self.directory / "active.jsonl"

    def append(self, commands: Sequence[SpoolableCommand]) -> None:
        """Write `commands` and fsync before returning."""
        lines = b"".join(
            _encoder.encode(_Line(_KIND_OF[type(c)], msgspec.Raw(_encoder.encode(c)))) + b"\n"
            for c in commands
        )
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.active.open("ab") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())

    def pending_files(self) -> list[Path]:
        """Files waiting for replay, oldest first (interrupted replays before new writes)."""
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob("replaying-*.jsonl")) + (
            [self.active] if self.active.exists() else []
        )

    def size(self) -> int:
        """Complete lines waiting for replay (for /metrics and status)."""
        total = 0
        with self._lock:  # not while `take` renames the active file
            for path in self.pending_files():
                with contextlib.suppress(FileNotFoundError):  # a replay just finished it
                    total += len(read_file(path))
        return total

    def take(self) -> list[Path]:
        """Freeze the active file for replay and return every file to replay."""
        with self._lock:
            if self.active.exists():
                self.active.rename(self.directory / f"replaying-{time.time_ns()}.jsonl")
        return sorted(self.directory.glob("replaying-*.jsonl")) if self.directory.exists() else []

    def done(self, path: Path) -> None:
        """Forget a file whose every command has been appended (or refused)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_file(path: Path) -> list[SpoolableCommand]:
    """The complete commands of a spool file (a torn or corrupt line is logged and skipped)."""
    commands: list[SpoolableCommand] = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            entry = _line_decoder.decode(line)
            commands.append(msgspec.json.decode(entry.command, type=_KINDS[entry.kind]))
        except (msgspec.DecodeError, KeyError):
            log.warning("spool %s line %d is incomplete or corrupt; skipped", path.name, number)
    return commands
