from __future__ import annotations

from ledger import commands as cmd
from tests.fix_db import LedgerEnv

G = 1001


def test_transfer_appends_both_halves(env: LedgerEnv) -> None:
    out = env.run(
        env.ledger.execute(cmd.Transfer(guild_id=G, command_id="t1", from_id=1, to_id=2, amount=10))
    )
    assert out.events == ["member_joined", "member_joined", "transfer_sent", "transfer_received"]
    assert out.members[1].balance == 15 and out.members[2].balance == 35
    assert len(out.positions) == 4
    again = env.run(
        env.ledger.execute(cmd.Transfer(guild_id=G, command_id="t1", from_id=1, to_id=2, amount=10))
    )
    assert again.replayed and again.positions == out.positions
    assert env.sql("SELECT count(*) FROM events")[0][0] == 4
