"""Write-side consistency: the state rows equal the fold of the log, and the economy's
invariants hold (no negative balance or item count; LC conserved; transfers zero-sum)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from ledger import events as ev
from ledger.member import NEW_MEMBER, MemberState, decode_state, evolve, lc_delta

GUILD_EVENTS = """
SELECT stream, type, schema_version, data::text FROM events
 WHERE guild_id = %s ORDER BY stream, version
"""
GUILD_STATES = "SELECT stream, state::text FROM streams WHERE guild_id = %s AND stream <> 0"


@dataclass
class ConsistencyReport:
    """What the check found for one guild."""

    guild_id: int
    events: int = 0
    members: int = 0
    minted_minus_burned: int = 0
    total_balance: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


async def check_guild(pool: AsyncConnectionPool, guild_id: int) -> ConsistencyReport:
    """Fold the guild's log (streamed) and compare it with its state rows."""
    report = ConsistencyReport(guild_id)
    folded: dict[int, MemberState] = defaultdict(lambda: NEW_MEMBER)
    transfer_sum = 0
    async with pool.connection() as conn, conn.transaction():
        # A big guild's log takes longer than the pool's statement limit to stream.
        await conn.execute("SET LOCAL statement_timeout = 0")
        async with conn.cursor(name="consistency") as cur:
            await cur.execute(GUILD_EVENTS, (guild_id,))
            async for stream, type_name, schema, data in cur:
                event = ev.decode(data, type_name, schema)
                report.events += 1
                if stream == 0:
                    continue
                folded[stream] = evolve(folded[stream], event)
                delta = lc_delta(event)
                if isinstance(event, ev.TransferSent | ev.TransferReceived):
                    transfer_sum += delta
                else:
                    report.minted_minus_burned += delta
        states_cur = await conn.execute(GUILD_STATES, (guild_id,))
        stored = {stream: decode_state(text) for stream, text in await states_cur.fetchall()}
    report.members = len(stored)
    report.total_balance = sum(s.balance for s in stored.values())
    if transfer_sum:
        report.problems.append(f"transfers are not zero-sum: they net {transfer_sum} LC")
    if report.total_balance != report.minted_minus_burned:
        report.problems.append(
            f"balances sum to {report.total_balance} LC but minted - burned is "
            f"{report.minted_minus_burned} LC"
        )
    for member, state in sorted(stored.items()):
        if state.balance < 0 or any(count < 0 for count in state.items.values()):
            report.problems.append(
                f"member {member} is negative: {state.balance} LC, items {state.items}"
            )
        if folded.get(member) != state:
            report.problems.append(f"member {member}: state row differs from the fold of its log")
    for member in sorted(set(folded) - set(stored)):
        report.problems.append(f"member {member} has events but no state row")
    return report
