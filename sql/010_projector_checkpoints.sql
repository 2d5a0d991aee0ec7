-- Projector bookkeeping: one checkpoint per projector, written in the same transaction as the
-- projector's read-table changes, so a batch is applied exactly once even if a worker dies.
-- The checkpoint is a place in delivery order, (tx, position), never a bare position: a
-- transaction that commits late with a lower position is still delivered in its turn.
CREATE TABLE projector_checkpoints (
    projector       text        PRIMARY KEY,
    tx              xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    -- Events of the types the projector handles that it has folded (status, tests).
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    rebuilt_at      timestamptz
);

-- Blue/green rebuilds fold the log into same-named tables in `projection_shadow`, then move them
-- into place (and the old ones into `projection_retired`, dropped right after) in one short
-- transaction. Moving a table between schemas keeps its index names, so names never drift.
CREATE SCHEMA projection_shadow;
CREATE SCHEMA projection_retired;
