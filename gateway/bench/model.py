"""The benchmark's data: workload sizes, one workload's result, the whole report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One workload's figure, its baseline from the same run, and the target."""

    key: str
    workload: str
    figure: float
    unit: str
    target: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    met: bool | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    notes: str = ""
    invariants: str = "ok"


@dataclass
class BenchReport:
    """The set-up and every result."""

    setup: dict[str, object]
    results: list[Result] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {"setup": self.setup, "results": [asdict(r) for r in self.results]}


@dataclass(frozen=True)
class Sizes:
    """How long and how big each workload is."""

    seconds: float
    p2_commands: int
    p2_members: int
    p8_history: int
    p8_samples: int
    p4_events: int  # the catch-up backlog
    p4_members: int  # members of the busy guild's backlog
    p5_events: int  # the whole log a rebuild folds
    p6_members: int  # members of the guild queried
    p6_samples: int  # calls of each query
    p7_seconds: float  # load while lag is sampled


FULL = Sizes(
    seconds=10,
    p2_commands=200_000,
    p2_members=20_000,
    p8_history=1_000_000,
    p8_samples=300,
    p4_events=1_000_000,
    p4_members=20_000,
    p5_events=10_000_000,
    p6_members=1_000_000,
    p6_samples=3_000,
    p7_seconds=20,
)
QUICK = Sizes(
    seconds=1,
    p2_commands=3_000,
    p2_members=300,
    p8_history=5_000,
    p8_samples=20,
    p4_events=20_000,
    p4_members=400,
    p5_events=50_000,
    p6_members=5_000,
    p6_samples=200,
    p7_seconds=2,
)
