"""Batched ingestion: many commands coalesced into one transaction per guild.

A busy guild sends thousands of messages a minute; one transaction per message would spend
the database on commits. The ingestor decides a whole batch against one load of the members'
state rows (none when it remembers them all: D20, `ledger.state_cache`) and appends it with one
`ledger_append` call per guild (application-level group commit). The invariants are the same
as for single commands: each command keeps its own id (a seen id is skipped and answered from
its record), decisions are made in order within the batch against the states the earlier ones
produced (cooldowns, balances), a refused command is left out alone, and a conflict with a
concurrent writer retries the batch from fresh state.

Reverts are not batched: they read the log first (`Ledger.execute`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

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
from ledger.state_cache import StateCache
from ledger.store import CONFIG_STREAM, AppendBatch, DuplicateCommand, EventStore, Loaded

Result = Outcome | LedgerError
log = logging.getLogger(__name__)

_outcome_decoder = msgspec.json.Decoder(Outcome)


class BatchIngestor:
    """Appends batches of commands, one transaction per guild."""

    def __init__(self, store: EventStore, cache: StateCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else StateCache()

    async def _load(
        self,
        guild_id: int,
        commands: dict[str, cmd.AnyCommand],
        members: list[int],
        use_cache: bool,
    ) -> tuple[Loaded, bool]:
        """The batch's config and state rows; True when any came from the cache.

        Fully remembered: no round trip (a seen command id then surfaces at the append, as a
        duplicate, and the retry loads). Otherwise one load of what is missing, plus the config
        and the command ids.
        """
        versions, states = self.cache.members(guild_id, members) if use_cache else ({}, {})
        config = self.cache.config(guild_id) if use_cache else None
        missing = [m for m in members if m not in versions]
        if config is not None and not missing:
            return Loaded(config[1], config[0], versions, states), True
        loaded = await self.store.load(guild_id, list(commands), missing)
        self.cache.remember(
            guild_id, (loaded.config_version, loaded.config), loaded.versions, loaded.states
        )
        loaded.versions.update(versions)
        loaded.states.update(states)
        return loaded, bool(versions)

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
            # The first attempt decides from remembered rows where it can; after a conflict,
            # everything is loaded fresh.
            loaded, remembered = await self._load(guild_id, unique, members, attempt == 0)
            states: dict[int, MemberState] = dict(loaded.states)
            loaded_versions = {**loaded.versions, CONFIG_STREAM: loaded.config_version}
            versions = dict(loaded_versions)
            config = loaded.config  # advanced by any ChangeConfig in the batch
            batch = AppendBatch(guild_id=guild_id)
            planned: list[tuple[str, Outcome, int]] = []  # (command id, outcome, event count)
            decided: dict[tuple[int, str], Result] = {}
            for command_id, command in unique.items():
                key = (guild_id, command_id)
                if command_id in loaded.seen:
                    seen = _outcome_decoder.decode(loaded.seen[command_id])
                    decided[key] = msgspec.structs.replace(seen, replayed=True)
                    continue
                try:
                    mine = {m: states[m] for m in command.members() if m in states}
                    decision = decide(command, config, mine)
                except LedgerError as exc:
                    decided[key] = exc
                    continue
                outcome = outcome_of(command_id, decision)
                if not decision.events:
                    decided[key] = outcome
                    continue
                states.update(decision.states)
                config = config_after(config, decision.events)
                plan(batch, command, decision, versions, outcome)
                planned.append((command_id, outcome, len(decision.events)))
            if not planned and not remembered:
                results.update(decided)
                return results
            # With nothing planned but remembered rows read, the append only checks the reads:
            # a refusal must not rest on a row another process has moved on.
            finish_streams(batch, loaded_versions, versions, states, config)
            batch.unseen_ids = [k[1] for k, r in decided.items() if not _replayed(r)]
            try:
                positions = await self.store.append(batch)
            except (Conflict, DuplicateCommand):
                self.cache.forget(guild_id, members)
                if not remembered:
                    await backoff(attempt)
                continue
            except BaseException:
                self.cache.forget(guild_id, members)
                raise
            self.cache.remember(guild_id, (versions[CONFIG_STREAM], config), versions, states)
            results.update(decided)
            offset = 0
            for command_id, outcome, count in planned:
                results[(guild_id, command_id)] = msgspec.structs.replace(
                    outcome, positions=positions[offset : offset + count]
                )
                offset += count
            return results
        raise Conflict("This is very busy right now; please try again in a moment.")


# A batch is split only when its share is at least this many commands: an append's cost is
# mostly fixed per call, so two appends of a command or two each cost the server nearly twice
# one (and a quiet guild's few commands keep their order in one transaction).
MIN_SPLIT = 4


def _split(batch: list[Item], share: int) -> tuple[list[Item], list[Item]]:
    """About `share` commands of `batch` to go now, and the rest for the next free lane,
    sharing no member; or all of it and nothing, when its commands are too entangled to split.

    Two lanes of 8 let Python decide one batch while PostgreSQL commits the other; 16
    closed-loop clients in one batch keep the second lane idle for as long as they keep
    submitting. A command goes with the part holding its members (now, while that is under
    `share`, when neither does), so each member's commands stay in one part, in order; a
    command whose members are in both parts makes the batch go whole (hot accounts: a few
    members shared by everything).
    """
    parts: tuple[list[Item], list[Item]] = ([], [])
    claimed = (_Claimed(), _Claimed())
    for item in batch:
        claims = item[2]
        now, later = claimed[0].conflicts(claims), claimed[1].conflicts(claims)
        if now and later:
            return batch, []
        side = 0 if now else 1 if later else int(len(parts[0]) >= share)
        parts[side].append(item)
        claimed[side].add(claims)
    return parts


def _replayed(result: Result) -> bool:
    return isinstance(result, Outcome) and result.replayed


Item = tuple[cmd.AnyCommand, "asyncio.Future[Result]", frozenset[tuple[int, int]]]

# A claim on every stream of a guild: config changes (every later decision reads the config)
# and reverts (their members are only known once the log has been read).
_WHOLE_GUILD = -1


def _claims(command: cmd.AnyCommand) -> frozenset[tuple[int, int]]:
    """The (guild, stream) pairs a command reads or writes, for the batcher's scheduling."""
    if isinstance(command, cmd.ChangeConfig | cmd.Revert):
        return frozenset({(command.guild_id, _WHOLE_GUILD)})
    return frozenset((command.guild_id, m) for m in command.members() if isinstance(m, int))


class _Claimed:
    """Streams claimed by batches in flight (or by commands held back), counted.

    Plain dicts holding only positive counts (a Counter's missing-key lookups and deletes
    run Python code: this is on the path of every command)."""

    def __init__(self) -> None:
        self.streams: dict[tuple[int, int], int] = {}
        self.guilds: dict[int, int] = {}  # claims of any kind per guild
        self.whole: dict[int, int] = {}  # whole-guild claims per guild

    def conflicts(self, claims: frozenset[tuple[int, int]]) -> bool:
        for key in claims:
            guild, stream = key
            if stream == _WHOLE_GUILD:
                if guild in self.guilds:
                    return True
            elif key in self.streams or guild in self.whole:
                return True
        return False

    def add(self, claims: frozenset[tuple[int, int]]) -> None:
        for key in claims:
            guild, stream = key
            _increment(self.guilds, guild)
            if stream == _WHOLE_GUILD:
                _increment(self.whole, guild)
            else:
                _increment(self.streams, key)

    def remove(self, claims: frozenset[tuple[int, int]]) -> None:
        for key in claims:
            guild, stream = key
            _decrement(self.guilds, guild)
            if stream == _WHOLE_GUILD:
                _decrement(self.whole, guild)
            else:
                _decrement(self.streams, key)


def _increment(counts: dict[Any, int], key: object) -> None:
    counts[key] = counts.get(key, 0) + 1


def _decrement(counts: dict[Any, int], key: object) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class CommandBatcher:
    """Coalesces concurrently submitted commands into batches (group commit).

    Callers `await submit(command)`; `run()` is the background task that flushes. With
    `max_delay` 0 a flush takes whatever is waiting the moment a flush slot is free, so an idle
    system answers at once and a busy one batches more; a positive `max_delay` waits that long
    for more commands (useful for XP, where a few milliseconds do not matter).

    Up to `concurrency` batches are in flight, so Python decides the next batch while
    PostgreSQL commits the previous one. Batches in flight never share a member: a command
    whose members are in a batch in flight waits for it (and so do the commands after it that
    share its members), so concurrent batches do not conflict, every member's commands are
    decided in submission order, and hot members cost no retries. A config change or revert
    waits for the guild's batches in flight, and the guild's later commands wait for it. A
    batch takes about its lane's share of the commands in the system (in flight and waiting),
    so a few closed-loop clients fill two lanes evenly instead of one (D13).

    With a spool, order survives an outage: once grants have been spooled, every later flush
    first replays the spool and only then appends its own commands. A spooled grant replayed
    after a newer grant of the same member would meet that member's cooldown and earn nothing.
    """

    def __init__(
        self,
        ingestor: BatchIngestor,
        max_batch: int = 500,
        max_delay: float = 0.0,
        concurrency: int = 2,
        spool: Spool | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.spool = spool
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._flushing_commands = 0  # commands in the batches in flight
        self._flushes: set[asyncio.Task[None]] = set()
        self._waiting: deque[Item] = deque()  # submission order
        self._in_flight = _Claimed()
        self._wake = asyncio.Event()  # a command arrived, or a flush finished
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
        self._waiting.append((command, future, _claims(command)))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """Flush batches until cancelled; a cancelled batcher first drains what is waiting."""
        try:
            while True:
                await self._slots.acquire()
                try:
                    batch = await self._collect()
                except BaseException:
                    self._slots.release()
                    raise
                self._flushing_commands += len(batch)
                flush = asyncio.create_task(self._flush(batch))
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
        except asyncio.CancelledError:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)
            drained = list(self._waiting)
            self._waiting.clear()
            if drained:
                with contextlib.suppress(Exception):
                    await self._flush(drained, claimed=False)
            raise

    async def _collect(self) -> list[Item]:
        """The next batch: waiting commands that share no member with a batch in flight."""
        batch: list[Item] = []
        while not self._take(batch):
            self._wake.clear()
            await self._wake.wait()
        if self.max_delay > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_delay
            while len(batch) < self.max_batch and (timeout := deadline - loop.time()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                self._take(batch)
        # An even share of the work in the system per lane: closed-loop clients would otherwise
        # settle into whatever split their batches first had (15 and 1, or all 16 in one).
        share = -(-(len(batch) + self._flushing_commands) // self.concurrency)
        if len(batch) > share >= MIN_SPLIT:
            batch, rest = _split(batch, share)
            self._waiting.extendleft(reversed(rest))
        for _, _, claims in batch:
            self._in_flight.add(claims)
        return batch

    def _take(self, batch: list[Item]) -> bool:
        """Move the waiting commands that may go now into `batch`, in order; True if any."""
        taken = len(batch)
        held: deque[Item] = deque()
        blocked = _Claimed()  # members of commands held back: later ones must not overtake
        waiting = self._waiting
        while waiting and len(batch) < self.max_batch:
            item = waiting.popleft()
            claims = item[2]
            if self._in_flight.conflicts(claims) or (held and blocked.conflicts(claims)):
                held.append(item)
                blocked.add(claims)
            else:
                batch.append(item)
        held.extend(waiting)
        self._waiting = held
        return len(batch) > taken

    async def _flush(self, items: list[Item], claimed: bool = True) -> None:
        # Waiters are answered before the lane is freed, so the clients they wake run (and
        # submit their next commands) before the batcher wakes to take the next batch: freed
        # first, it would take only what was already waiting and leave the answered clients'
        # new commands for a later, smaller batch (closed-loop clients then settle into three
        # uneven batches instead of two even ones).
        try:
            if self._spool_pending:
                await self._replay_first()
            results = await self.ingestor.ingest([command for command, _, _ in items])
        except DatabaseUnavailable as exc:
            await self._spool_or_fail(items, exc)
        except Exception as exc:  # every waiter must hear about a failed flush
            for _, future, _ in items:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future, _), result in zip(items, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            if claimed:
                for _, _, claims in items:
                    self._in_flight.remove(claims)
                self._flushing_commands -= len(items)
                self._slots.release()
                self._wake.set()

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
        pending: list[Item],
        exc: DatabaseUnavailable,
    ) -> None:
        """XP grants go to the durable spool (answered `note="spooled"`); the rest fail."""
        spoolable = [(c, f) for c, f, _ in pending if self.spool and isinstance(c, SPOOLABLE)]
        if spoolable and self.spool is not None:
            try:
                await asyncio.to_thread(self.spool.append, [c for c, _ in spoolable])
                self._spool_pending = True
                self._spool_writes += 1
            except OSError:
                log.exception("could not write the XP spool")
                spoolable = []
        spooled = {id(f) for _, f in spoolable}
        for command, future, _ in pending:
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
