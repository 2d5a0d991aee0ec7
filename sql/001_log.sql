-- The append-only event log, the write-side state rows and the idempotency records.
-- Keys are guild-first so the tables can later be distributed by guild_id (DESIGN §8).

CREATE TABLE events (
    position        bigint      GENERATED ALWAYS AS IDENTITY,
    -- The appending transaction: readers deliver in (tx, position) order below the snapshot
    -- horizon so that a late-committing lower position is never skipped.
    tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    guild_id        bigint      NOT NULL,
    -- The stream is the member's id; 0 is the guild's own stream (configuration).
    stream          bigint      NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    type            text        NOT NULL,
    schema_version  smallint    NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    meta            jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (guild_id, position),
    UNIQUE (guild_id, stream, version)
);

CREATE INDEX events_delivery ON events (tx, position);

-- Immutability: corrections are compensating events, never edits.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'LX001', HINT = 'append a compensating event instead';
END;
$$;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;

-- Write-side state: one row per stream, advanced in the same transaction as its events, so a
-- command never reads a member's history. The row is also the stream's optimistic lock.
CREATE TABLE streams (
    guild_id    bigint NOT NULL,
    stream      bigint NOT NULL,
    version     bigint NOT NULL,
    state       jsonb  NOT NULL,
    PRIMARY KEY (guild_id, stream)
);

-- Idempotency: one row per command id; a retry returns `result` and appends nothing.
CREATE TABLE commands (
    guild_id    bigint      NOT NULL,
    command_id  text        NOT NULL,
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    result      jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (guild_id, command_id)
);

-- One append = one statement = one round trip. Streams are given sorted by id, so every
-- writer locks state rows in the same (guild, member) order and concurrent commands never
-- deadlock. A stale expected version raises LX409 (retry from fresh state); a seen command
-- id raises a unique violation on commands_pkey (look the first result up).
CREATE FUNCTION ledger_append(
    p_guild          bigint,
    p_command_ids    text[],
    p_results        jsonb[],
    p_streams        bigint[],
    p_expected       bigint[],
    p_new_versions   bigint[],
    p_states         jsonb[],
    p_ev_streams     bigint[],
    p_ev_versions    bigint[],
    p_ev_types       text[],
    p_ev_schemas     smallint[],
    p_ev_data        jsonb[],
    p_ev_meta        jsonb[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    i         int;
    positions bigint[];
BEGIN
    INSERT INTO commands (guild_id, command_id, result)
    SELECT p_guild, c.id, c.result
      FROM unnest(p_command_ids, p_results) AS c(id, result);

    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        IF p_expected[i] = 0 THEN
            INSERT INTO streams (guild_id, stream, version, state)
            VALUES (p_guild, p_streams[i], p_new_versions[i], p_states[i]);
        ELSE
            UPDATE streams
               SET version = p_new_versions[i], state = p_states[i]
             WHERE guild_id = p_guild AND stream = p_streams[i] AND version = p_expected[i];
            IF NOT FOUND THEN
                RAISE EXCEPTION 'stream %/% is no longer at version %',
                    p_guild, p_streams[i], p_expected[i]
                    USING ERRCODE = 'LX409';
            END IF;
        END IF;
    END LOOP;

    WITH appended AS (
        INSERT INTO events (guild_id, stream, version, type, schema_version, data, meta)
        SELECT p_guild, e.stream, e.version, e.type, e.schema_version, e.data, e.meta
          FROM unnest(p_ev_streams, p_ev_versions, p_ev_types, p_ev_schemas, p_ev_data, p_ev_meta)
               WITH ORDINALITY AS e(stream, version, type, schema_version, data, meta, ord)
         ORDER BY e.ord
        RETURNING position
    )
    SELECT coalesce(array_agg(position ORDER BY position), '{}') INTO positions FROM appended;
    RETURN positions;
END;
$$;
