"""The command service: load state, decide, append; retry conflicts; answer seen ids.

This is the only way events get written. The gateway, the scheduler, the CLI and the demo
all call `Ledger.execute` (or the batched `XpIngestor`) with a command.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence

import msgspec

from ledger import commands as cmd
from ledger import events as ev
from ledger.errors import Conflict, DatabaseUnavailable, InvalidInput
from ledger.guild_config import GuildConfig, evolve_config
from ledger.member import MemberState
from ledger.rules import Decision, decide
from ledger.rules.admin import MAX_REVERT
from ledger.rules.draft import MAX_SNOWFLAKE, check_id
from ledger.store import CONFIG_STREAM, AppendBatch, DuplicateCommand, EventStore, encode_json

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
MAX_COMMAND_ID = 128


class MemberSummary(msgspec.Struct, frozen=True):
    """A member's figures right after a command (read-your-writes for the reply)."""

    balance: int
    xp: int
    level: int


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a command did. `replayed` is true when the id had been seen before.

    Recorded per command; the record leaves out the fields at their defaults (D25)."""

    command_id: str
    value: int = 0
    note: str = ""
    ref: str = ""
    events: list[str] = []
    members: dict[int, MemberSummary] = {}
    level_changes: list[tuple[int, int, int]] = []  # (member, old level, new level)
    positions: list[int] = []
    replayed: bool = False

    @property
    def appended(self) -> bool:
        """True when the command appended events."""
        return bool(self.events)


_outcome_decoder = msgspec.json.Decoder(Outcome)


def check_command_id(command_id: object) -> str:
    """Command ids are short printable strings (a snowflake, or a derived key)."""
    if (
        not isinstance(command_id, str)
        or not 0 < len(command_id) <= MAX_COMMAND_ID
        or not command_id.isprintable()
    ):
        raise InvalidInput(f"A command id is 1 to {MAX_COMMAND_ID} printable characters.")
    return command_id


def check_command(command: cmd.Command) -> None:
    """Checks every command passes before it is decided: guild, id, aware time."""
    check_id(command.guild_id, "Guild")
    check_command_id(command.command_id)
    for member in command.members():
        check_id(member, "Member")
    if command.at.tzinfo is None or command.at.utcoffset() is None:
        raise InvalidInput("Command times must be timezone-aware (UTC).")


def outcome_of(command_id: str, decision: Decision) -> Outcome:
    """The result recorded for a command, from its decision and the states after it."""
    states = decision.states
    touched = sorted({e.member_id for e in decision.events if e.member_id != CONFIG_STREAM})
    return Outcome(
        command_id=command_id,
        value=decision.value,
        note=decision.note,
        ref=decision.ref,
        events=[ev.event_type(e) for e in decision.events],
        members={
            m: MemberSummary(states[m].balance, states[m].xp, states[m].level) for m in touched
        },
        level_changes=[
            (e.member_id, e.old_level, e.new_level)
            for e in decision.events
            if isinstance(e, ev.LevelChanged)
        ],
    )


def plan(
    batch: AppendBatch,
    command: cmd.Command,
    decision: Decision,
    versions: dict[int, int],
    outcome: Outcome,
) -> None:
    """Add one decided command's record and events to `batch`, advancing `versions`."""
    meta = encode_json(
        ev.Meta(command_id=command.command_id, actor_id=_actor_id(command), source=command.source)
    )
    batch.command_ids.append(command.command_id)
    batch.results.append(encode_json(outcome))
    for event in decision.events:
        stream = event.member_id
        versions[stream] = versions.get(stream, 0) + 1
        name = ev.event_type(event)
        batch.ev_streams.append(stream)
        batch.ev_versions.append(versions[stream])
        batch.ev_types.append(name)
        batch.ev_schemas.append(ev.SCHEMA_VERSIONS[name])
        batch.ev_data.append(ev.encode(event).decode())
        batch.ev_meta.append(meta)


def finish_streams(
    batch: AppendBatch,
    loaded_versions: Mapping[int, int],
    versions: Mapping[int, int],
    states: Mapping[int, MemberState],
    config: GuildConfig,
) -> None:
    """Add a state row for every stream that advanced, in (guild, member) lock order, and a
    read check for every stream that was read (loaded) and did not advance."""
    for stream in sorted(versions):
        expected = loaded_versions.get(stream, 0)
        if versions[stream] == expected:
            if stream in loaded_versions:
                batch.read_streams.append(stream)
                batch.read_versions.append(expected)
            continue
        batch.streams.append(stream)
        batch.expected.append(expected)
        batch.new_versions.append(versions[stream])
        batch.states.append(encode_json(config if stream == CONFIG_STREAM else states[stream]))


def _actor_id(command: cmd.Command) -> int:
    actor = getattr(command, "actor", None)
    if isinstance(actor, cmd.Actor):
        return actor.user_id
    for name in ("member_id", "from_id", "reactor_id", "inviter_id"):
        value = getattr(command, name, None)
        if isinstance(value, int):
            return value
    return 0


async def backoff(attempt: int) -> None:
    """Full-jitter exponential backoff, capped at 100 ms: no retry storms on hot members."""
    await asyncio.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))


class Ledger:
    """Executes commands against the store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def execute(self, command: cmd.AnyCommand) -> Outcome:
        """Decide and append `command`; a seen command id returns its first outcome.

        Raises a `LedgerError` when the command is refused (nothing appended then), `Conflict`
        when contention outlasts the retries, `DatabaseUnavailable` when PostgreSQL is away.
        """
        check_command(command)
        command, originals = await self._with_originals(command)
        members = sorted(set(command.members()))
        for attempt in range(MAX_ATTEMPTS):
            loaded = await self.store.load(command.guild_id, [command.command_id], members)
            if loaded.seen:
                return await self._replay(command)
            decision = decide(command, loaded.config, loaded.states, originals)
            if not decision.events:
                return outcome_of(command.command_id, decision)
            config = config_after(loaded.config, decision.events)
            outcome = outcome_of(command.command_id, decision)
            loaded_versions = {**loaded.versions, CONFIG_STREAM: loaded.config_version}
            versions = dict(loaded_versions)
            batch = AppendBatch(guild_id=command.guild_id)
            plan(batch, command, decision, versions, outcome)
            finish_streams(batch, loaded_versions, versions, decision.states, config)
            try:
                positions = await self.store.append(batch)
            except Conflict:
                await backoff(attempt)
                continue
            except DuplicateCommand:
                return await self._replay(command)
            except DatabaseUnavailable:
                return await self._resolve_unknown(command)
            return msgspec.structs.replace(outcome, positions=positions)
        raise Conflict("This is very busy right now; please try again in a moment.")

    async def preview(self, command: cmd.AnyCommand) -> Outcome:
        """What `command` would do now, without appending anything (reverts are previewed
        before they are confirmed). Raises the `LedgerError` it would raise."""
        check_command(command)
        command, originals = await self._with_originals(command)
        members = sorted(set(command.members()))
        loaded = await self.store.load(command.guild_id, [command.command_id], members)
        if loaded.seen:
            return await self._replay(command)
        return outcome_of(
            command.command_id, decide(command, loaded.config, loaded.states, originals)
        )

    async def _with_originals(
        self, command: cmd.AnyCommand
    ) -> tuple[cmd.AnyCommand, list[ev.Recorded]]:
        """For a revert: the events it names (plus transfer counterparts), and its members."""
        if not isinstance(command, cmd.Revert):
            return command, []
        positions = list(command.positions)
        if not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p <= MAX_SNOWFLAKE
            for p in positions
        ):
            raise InvalidInput("Positions are positive whole numbers.")
        if len(positions) > MAX_REVERT:
            raise InvalidInput(f"Revert at most {MAX_REVERT} events at once.")
        originals = await self.store.events_at(command.guild_id, positions)
        touched = tuple(sorted({r.stream for r in originals}))
        return msgspec.structs.replace(command, touched=touched), originals

    async def _replay(self, command: cmd.Command) -> Outcome:
        found = await self.store.command_result(command.guild_id, command.command_id)
        if found is None:  # cannot happen: the id was seen; treat as a conflict to retry
            raise Conflict("Please try again.")
        result, positions = found
        outcome = _outcome_decoder.decode(result)
        return msgspec.structs.replace(outcome, positions=positions, replayed=True)

    async def _resolve_unknown(self, command: cmd.Command) -> Outcome:
        """The append may or may not have committed: the command id says which."""
        for attempt in range(3):
            try:
                return await self._replay(command)
            except Conflict:
                raise DatabaseUnavailable(
                    "The economy database did not answer; nothing was recorded. Try again."
                ) from None
            except DatabaseUnavailable:
                await backoff(attempt + 4)
        raise DatabaseUnavailable(
            "The economy database is not answering; whether this went through is unknown "
            "until it is back. Retrying with the same command is safe."
        )


def config_after(config: GuildConfig, events: Sequence[ev.AnyEvent]) -> GuildConfig:
    """The guild config after any `ConfigChanged` among `events`."""
    for event in events:
        if isinstance(event, ev.ConfigChanged):
            config = evolve_config(config, event)
    return config
