"""Delivery order is by xid as a number: '10' after '9' (a text sort would skip events)."""

from __future__ import annotations

from ledger.chain import seal, verify_chain
from ledger.store import Checkpoint
from tests.fix_db import LedgerEnv

INSERT = """
INSERT INTO events (tx, guild_id, stream, version, type, data, meta)
VALUES (%s::text::xid8, 1, %s, 1, 'member_joined',
        '{"type":"member_joined","member_id":1,"at":"2026-01-01T00:00:00Z","starting_balance":25}',
        '{"command_id":"c"}')
"""


def test_readers_and_the_sealer_order_xids_numerically(env: LedgerEnv) -> None:
    # explicit old xids straddling digit boundaries, inserted in an order that differs from
    # both their numeric and their text order
    for stream, xid in enumerate(("100", "9", "10", "99", "8"), start=1):
        env.sql(INSERT, (xid, stream))
    delivered = env.run(env.store.read(Checkpoint(), limit=100))
    assert [r.tx for r in delivered] == [8, 9, 10, 99, 100]
    # read in small batches from each checkpoint: nothing skipped, nothing repeated
    seen: list[int] = []
    checkpoint = Checkpoint()
    while batch := env.run(env.store.read(checkpoint, limit=2)):
        seen += [r.tx for r in batch]
        checkpoint = Checkpoint(batch[-1].tx, batch[-1].position)
    assert seen == [8, 9, 10, 99, 100]
    # the chain is sealed in the same order and verifies
    assert env.run(seal(env.store.pool, limit=2)) == 5
    assert env.run(verify_chain(env.store.pool)).ok
    order = env.sql(
        "SELECT e.tx::text FROM event_hashes h JOIN events e USING (guild_id, position) "
        "ORDER BY h.seq"
    )
    assert [int(t) for (t,) in order] == [8, 9, 10, 99, 100]
