"""Batched XP ingestion: many message/voice/reaction grants coalesced into one transaction.

A busy guild sends thousands of messages a minute; one transaction per message would spend
the database on commits. The ingestor decides a whole batch against one load of the members'
state rows and appends it with one `ledger_append` call per guild. The invariants are the same
as for single commands: each grant keeps its own command id (a seen id is skipped and answered
from its record), cooldowns are decided in order within the batch, and a conflict with a
concurrent writer retries the batch from fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence

import msgspec

from ledger import commands as cmd
from ledger.errors import Conflict, LedgerError
from ledger.member import MemberState
from ledger.rules import decide
from ledger.service import (
    MAX_ATTEMPTS,
    Outcome,
    backoff,
    check_command_id,
    finish_streams,
    outcome_of,
    plan,
)
from ledger.store import CONFIG_STREAM, AppendBatch, DuplicateCommand, EventStore

XpCommand = cmd.GrantMessageXp | cmd.VoiceTick | cmd.ReactionReceived
Result = Outcome | LedgerError

_outcome_decoder = msgspec.json.Decoder(Outcome)


class XpIngestor:
    """Appends batches of XP commands, one transaction per guild."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def ingest(self, commands: Sequence[XpCommand]) -> list[Result]:
        """Decide and append `commands`; one result per command, in order.

        A refused command gets its `LedgerError` as its result and appends nothing; the
        others still land.
        """
        by_guild: dict[int, list[XpCommand]] = defaultdict(list)
        for command in commands:
            by_guild[command.guild_id].append(command)
        results: dict[tuple[int, str], Result] = {}
        for guild_id, guild_commands in by_guild.items():
            results.update(await self._ingest_guild(guild_id, guild_commands))
        return [results[(c.guild_id, c.command_id)] for c in commands]

    async def _ingest_guild(
        self, guild_id: int, commands: list[XpCommand]
    ) -> dict[tuple[int, str], Result]:
        unique: dict[str, XpCommand] = {}
        results: dict[tuple[int, str], Result] = {}
        for command in commands:
            try:
                check_command_id(command.command_id)
            except LedgerError as exc:
                results[(guild_id, command.command_id)] = exc
                continue
            unique.setdefault(command.command_id, command)
        members = sorted({m for c in unique.values() for m in c.members() if isinstance(m, int)})
        for attempt in range(MAX_ATTEMPTS):
            loaded = await self.store.load(guild_id, list(unique), members)
            states: dict[int, MemberState] = dict(loaded.states)
            loaded_versions = {**loaded.versions, CONFIG_STREAM: loaded.config_version}
            versions = dict(loaded_versions)
            batch = AppendBatch(guild_id=guild_id)
            planned: list[tuple[str, Outcome, int]] = []  # (command id, outcome, event count)
            for command_id, command in unique.items():
                key = (guild_id, command_id)
                if command_id in loaded.seen:
                    seen = _outcome_decoder.decode(loaded.seen[command_id])
                    results[key] = msgspec.structs.replace(seen, replayed=True)
                    continue
                try:
                    mine = {m: states[m] for m in command.members() if m in states}
                    decision = decide(command, loaded.config, mine)
                except LedgerError as exc:
                    results[key] = exc
                    continue
                outcome = outcome_of(command_id, decision)
                if not decision.events:
                    results[key] = outcome
                    continue
                states.update(decision.states)
                plan(batch, command, decision, versions, outcome)
                planned.append((command_id, outcome, len(decision.events)))
            if not planned:
                return results
            finish_streams(batch, loaded_versions, versions, states, loaded.config)
            try:
                positions = await self.store.append(batch)
            except (Conflict, DuplicateCommand):
                await backoff(attempt)
                continue
            offset = 0
            for command_id, outcome, count in planned:
                results[(guild_id, command_id)] = msgspec.structs.replace(
                    outcome, positions=positions[offset : offset + count]
                )
                offset += count
            return results
        raise Conflict("XP ingestion kept conflicting with other writers; the batch was not saved.")


class XpBatcher:
    """Collects XP commands for up to `max_delay` seconds (or `max_batch` commands) per flush.

    Listeners `await submit(command)`; `run()` is the background task that flushes. Callers
    see the same `Result` the ingestor returns, so a listener can still announce level-ups.
    """

    def __init__(self, ingestor: XpIngestor, max_batch: int = 500, max_delay: float = 0.02):
        self.ingestor = ingestor
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queue: asyncio.Queue[tuple[XpCommand, asyncio.Future[Result]]] = asyncio.Queue()

    async def submit(self, command: XpCommand) -> Result:
        """Queue a command and wait for the batch that carries it to be appended."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, future))
        return await future

    async def run(self) -> None:
        """Flush batches until cancelled; a cancelled batcher first drains what is queued."""
        try:
            while True:
                first = await self._queue.get()
                pending = [first]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.max_delay
                while len(pending) < self.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        pending.append(await asyncio.wait_for(self._queue.get(), timeout))
                    except TimeoutError:
                        break
                await self._flush(pending)
        except asyncio.CancelledError:
            drained = []
            while not self._queue.empty():
                drained.append(self._queue.get_nowait())
            if drained:
                with contextlib.suppress(Exception):
                    await self._flush(drained)
            raise

    async def _flush(self, pending: list[tuple[XpCommand, asyncio.Future[Result]]]) -> None:
        try:
            results = await self.ingestor.ingest([command for command, _ in pending])
        except Exception as exc:  # every waiter must hear about a failed flush
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():
                future.set_result(result)
