"""Batched ingestion: many commands coalesced into one transaction per guild.

A busy guild sends thousands of messages a minute; one transaction per message would spend
the database on commits. The ingestor decides a whole batch against one load of the members'
state rows and appends it with one `ledger_append` call per guild (application-level group
commit). The invariants are the same as for single commands: each command keeps its own id (a
seen id is skipped and answered from its record), decisions are made in order within the batch
against the states the earlier ones produced (cooldowns, balances), a refused command is left
out alone, and a conflict with a concurrent writer retries the batch from fresh state.

Reverts are not batched: they read the log first (`Ledger.execute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence

import msgspec

from ledger import commands as cmd
from ledger.errors import Conflict, DatabaseUnavailable, InvalidInput, LedgerError
from ledger.member import MemberState
from ledger.rules import decide
from ledger.service import (
    MAX_ATTEMPTS,
    Outcome,
    backoff,
    check_command,
    config_after,
    finish_streams,
    outcome_of,
    plan,
)
from ledger.spool import SPOOLABLE, Spool, read_file
from ledger.store import CONFIG_STREAM, AppendBatch, DuplicateCommand, EventStore

Result = Outcome | LedgerError
log = logging.getLogger(__name__)

_outcome_decoder = msgspec.json.Decoder(Outcome)


class BatchIngestor:
    """Appends batches of commands, one transaction per guild."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def ingest(self, commands: Sequence[cmd.AnyCommand]) -> list[Result]:
        """Decide and append `commands`; one result per command, in order.

        A refused command gets its `LedgerError` as its result and appends nothing; the
        others still land.
        """
        by_guild: dict[int, list[cmd.AnyCommand]] = defaultdict(list)
        for command in commands:
            by_guild[command.guild_id].append(command)
        results: dict[tuple[int, str], Result] = {}
        for guild_id, guild_commands in by_guild.items():
            results.update(await self._ingest_guild(guild_id, guild_commands))
        return [results[(c.guild_id, c.command_id)] for c in commands]

    async def _ingest_guild(
        self, guild_id: int, commands: list[cmd.AnyCommand]
    ) -> dict[tuple[int, str], Result]:
        unique: dict[str, cmd.AnyCommand] = {}
        results: dict[tuple[int, str], Result] = {}
        for command in commands:
            try:
                check_command(command)
                if isinstance(command, cmd.Revert):
                    raise InvalidInput("Reverts are executed one at a time, not batched.")
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
            config = loaded.config  # advanced by any ChangeConfig in the batch
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
                    decision = decide(command, config, mine)
                except LedgerError as exc:
                    results[key] = exc
                    continue
                outcome = outcome_of(command_id, decision)
                if not decision.events:
                    results[key] = outcome
                    continue
                states.update(decision.states)
                config = config_after(config, decision.events)
                plan(batch, command, decision, versions, outcome)
                planned.append((command_id, outcome, len(decision.events)))
            if not planned:
                return results
            finish_streams(batch, loaded_versions, versions, states, config)
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
        raise Conflict("This is very busy right now; please try again in a moment.")


class CommandBatcher:
    """Coalesces concurrently submitted commands into batches (group commit).

    Callers `await submit(command)`; `run()` is the background task that flushes. With
    `max_delay` 0 a flush takes whatever is queued the moment the previous flush returns, so an
    idle system answers at once and a busy one batches more; a positive `max_delay` waits that
    long for more commands (useful for XP, where a few milliseconds do not matter).

    With a spool, order survives an outage: once grants have been spooled, every later flush
    first replays the spool and only then appends its own commands. A spooled grant replayed
    after a newer grant of the same member would meet that member's cooldown and earn nothing.
    """

    def __init__(
        self,
        ingestor: BatchIngestor,
        max_batch: int = 500,
        max_delay: float = 0.0,
        concurrency: int = 1,
        spool: Spool | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.spool = spool
        self.max_batch = max_batch
        self.max_delay = max_delay
        # Batches in flight at once: more overlaps deciding with committing; batches touching
        # the same member then conflict and retry, so hot-member traffic wants 1.
        self._slots = asyncio.Semaphore(concurrency)
        self._flushes: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[tuple[cmd.AnyCommand, asyncio.Future[Result]]] = asyncio.Queue()
        # Spooled grants not yet replayed (files left by a crash count too), and how many spool
        # writes this batcher made: a replay that saw no new write leaves nothing behind.
        self._spool_pending = spool is not None and bool(spool.pending_files())
        self._spool_writes = 0
        self._replaying = asyncio.Lock()

    async def execute(self, command: cmd.AnyCommand) -> Outcome:
        """Like `Ledger.execute`: the outcome, or the command's `LedgerError` raised."""
        result = await self.submit(command)
        if isinstance(result, LedgerError):
            raise result
        return result

    async def submit(self, command: cmd.AnyCommand) -> Result:
        """Queue a command and wait for the batch that carries it; refusals are returned."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, future))
        return await future

    async def run(self) -> None:
        """Flush batches until cancelled; a cancelled batcher first drains what is queued."""
        try:
            while True:
                await self._slots.acquire()
                first = await self._queue.get()
                pending = [first]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.max_delay
                while len(pending) < self.max_batch and not self._queue.empty():
                    pending.append(self._queue.get_nowait())
                while len(pending) < self.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        pending.append(await asyncio.wait_for(self._queue.get(), timeout))
                    except TimeoutError:
                        break
                flush = asyncio.create_task(self._flush(pending))
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
        except asyncio.CancelledError:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
            drained = []
            while not self._queue.empty():
                drained.append(self._queue.get_nowait())
            if drained:
                with contextlib.suppress(Exception):
                    await self._flush(drained)
            raise

    async def _flush(self, pending: list[tuple[cmd.AnyCommand, asyncio.Future[Result]]]) -> None:
        try:
            if self._spool_pending:
                await self._replay_first()
            results = await self.ingestor.ingest([command for command, _ in pending])
        except DatabaseUnavailable as exc:
            await self._spool_or_fail(pending, exc)
            return
        except Exception as exc:  # every waiter must hear about a failed flush
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._slots.release()
        for (_, future), result in zip(pending, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _replay_first(self) -> None:
        """Replay what this batcher spooled before appending anything newer (in order).

        Raises `DatabaseUnavailable` while the database is still away; the caller then spools
        its own batch behind the rest."""
        assert self.spool is not None
        async with self._replaying:
            if self._spool_pending:
                # still away? then fail here, before a replay renames the spool file for nothing
                await self.ingestor.store.horizon()
            while self._spool_pending:
                writes = self._spool_writes
                try:
                    count = await replay_spool(self.spool, self.ingestor)
                except OSError:  # the disk, not the database: new traffic must not wait on it
                    log.exception("could not replay the XP spool; the replayer will retry")
                    return
                log.info("replayed %d spooled XP grants before new traffic", count)
                if writes == self._spool_writes:
                    self._spool_pending = False

    async def _spool_or_fail(
        self,
        pending: list[tuple[cmd.AnyCommand, asyncio.Future[Result]]],
        exc: DatabaseUnavailable,
    ) -> None:
        """XP grants go to the durable spool (answered `note="spooled"`); the rest fail."""
        spoolable = [(c, f) for c, f in pending if self.spool and isinstance(c, SPOOLABLE)]
        if spoolable and self.spool is not None:
            try:
                await asyncio.to_thread(self.spool.append, [c for c, _ in spoolable])
                self._spool_pending = True
                self._spool_writes += 1
            except OSError:
                log.exception("could not write the XP spool")
                spoolable = []
        spooled = {id(f) for _, f in spoolable}
        for command, future in pending:
            if future.done():
                continue
            if id(future) in spooled:
                future.set_result(Outcome(command_id=command.command_id, note="spooled"))
            else:
                future.set_exception(exc)


async def replay_spool(spool: Spool, ingestor: BatchIngestor, chunk: int = 500) -> int:
    """Append every spooled grant (idempotently); returns how many appended events' commands.

    Stops at the first `DatabaseUnavailable`, leaving the file for the next attempt."""
    replayed = 0
    for path in await asyncio.to_thread(spool.take):
        try:
            commands = await asyncio.to_thread(read_file, path)
        except FileNotFoundError:  # another replayer (the batcher's, or the background one)
            continue  # finished this file: every grant in it is appended
        for start in range(0, len(commands), chunk):
            for result in await ingestor.ingest(commands[start : start + chunk]):
                if isinstance(result, LedgerError):
                    log.warning("spooled grant refused on replay: %s", result.message)
                elif result.appended and not result.replayed:
                    replayed += 1
        await asyncio.to_thread(spool.done, path)
    return replayed


async def run_spool_replayer(
    spool: Spool, ingestor: BatchIngestor, stop: asyncio.Event, interval: float = 2.0
) -> None:
    """Replay the spool whenever it has files and the database answers, until `stop`."""
    while not stop.is_set():
        if await asyncio.to_thread(spool.pending_files):
            try:
                count = await replay_spool(spool, ingestor)
                log.info("replayed %d spooled XP grants", count)
            except DatabaseUnavailable:
                pass  # still down: try again later
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
