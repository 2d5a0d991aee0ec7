"""Projections: projectors fold the log into read tables; workers, rebuild, verify, status.

The public entry points (the CLI and the gateway call these; the gateway reads only through
`projections.queries` and `projections.leaderboard`):

- `run_workers(pool, names=..., stop=...)`: a worker process's loop; `catch_up(pool)`: apply
  everything committed before the call and return.
- `rebuild(pool, names, progress, jobs=...)`: blue/green rebuild from the log, folded by one
  process or, member by member, by several (`WorkerFailed` when one of them fails).
- `verify(pool, names)`: replay the log in memory and compare with the live tables.
- `status(pool)`: checkpoints, lag, what holds the projectors back, leases.

`projections` imports `ledger` and never writes events.
"""

from __future__ import annotations

from projections.partitions import WorkerFailed
from projections.projectors import PROJECTORS, UnknownProjector
from projections.rebuild import RebuildBusy, RebuildReport, rebuild
from projections.status import Holder, ProjectorStatus, status
from projections.verify import Difference, TableCheck, VerifyReport, verify
from projections.worker import catch_up, run_workers

__all__ = [
    "PROJECTORS",
    "Difference",
    "Holder",
    "ProjectorStatus",
    "RebuildBusy",
    "RebuildReport",
    "TableCheck",
    "UnknownProjector",
    "VerifyReport",
    "WorkerFailed",
    "catch_up",
    "rebuild",
    "run_workers",
    "status",
    "verify",
]
