# Common tasks; each is one uv command, so `just` is a convenience, not a requirement.

default:
    @just --list

# simulated guild traffic, projections and verify on the embedded PostgreSQL
demo *ARGS:
    uv run ledger demo {{ARGS}}

# the whole test suite
test *ARGS:
    uv run pytest {{ARGS}}

# lint, format check and type check
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy

# format the code
fmt:
    uv run ruff format .
    uv run ruff check --fix .

# benchmarks against raw PostgreSQL and the peers (results go in BENCHMARKS.md)
bench *ARGS:
    uv run --group bench ledger bench {{ARGS}}
