-- The gateway's outbox: the Discord side effects of events (level-up announcements, level-role
-- rewards, the warning threshold action), one row per (guild, event position, effect).
--
-- It is not a read table: no projector owns it and a rebuild never touches it, so replaying the
-- log never fires a side effect again. The outbox consumer inserts rows with ON CONFLICT DO
-- NOTHING in the same transaction that advances its own checkpoint (below); the dispatcher
-- delivers them at least once, and the key travels with each delivery so the receiving end can
-- deduplicate a resend (Discord message nonces).
CREATE TABLE outbox (
    guild_id        bigint      NOT NULL,
    position        bigint      NOT NULL,
    effect          text        NOT NULL,
    member_id       bigint      NOT NULL,
    payload         jsonb       NOT NULL,
    -- pending -> delivered | abandoned (gave up) | superseded (a newer role sync replaced it)
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'abandoned', 'superseded')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A dispatcher's lease on a row it is sending; an expired lease (a dead dispatcher) frees it.
    claimed_by      text,
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (guild_id, position, effect)
);

CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_member ON outbox (guild_id, member_id, effect, position);

-- The consumer's place in delivery order, (tx, position), moved in the same transaction as the
-- rows it inserts.
CREATE TABLE outbox_checkpoint (
    consumer    text        PRIMARY KEY,
    tx          xid8        NOT NULL DEFAULT '0',
    position    bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Start after the log as it is when the outbox arrives: a database with history does not
-- announce every past level-up. (Migrations run before the services start appending.)
INSERT INTO outbox_checkpoint (consumer, tx, position)
SELECT 'outbox', e.tx, e.position FROM events e ORDER BY e.tx DESC, e.position DESC LIMIT 1;
INSERT INTO outbox_checkpoint (consumer) VALUES ('outbox') ON CONFLICT DO NOTHING;
