-- ledger_append with read checks: the streams a batch read but did not write (the guild's
-- config, a transfer's refused side, a member whose grant was refused), with the versions its
-- decisions saw. If any of them has moved on, nothing is appended (LX409, retry from fresh
-- state). Writers decide from state rows they keep in memory (D20); a written row is already
-- checked by its expected version, and this closes the same gap for rows only read.
-- `p_unseen_ids` are the batch's refused command ids: a refusal is not recorded, so this is
-- what tells a retried command (answered from its record) from a new one, as the recorded
-- ones are told by the insert into `commands`.
--
-- The 13-argument function of 001 stays, unchanged, for processes of the previous release
-- during a rolling upgrade; this one calls it, then checks the reads (after the writes have
-- taken their row locks, so the check is as late as it can be before the commit).
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
    p_ev_meta        jsonb[],
    p_read_streams   bigint[],
    p_read_versions  bigint[],
    p_unseen_ids     text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    positions bigint[];
    moved     bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM commands
                WHERE guild_id = p_guild AND command_id = ANY(p_unseen_ids)) THEN
        RAISE EXCEPTION 'a command of this batch was already recorded'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'commands_pkey';
    END IF;

    positions := ledger_append(
        p_guild, p_command_ids, p_results, p_streams, p_expected, p_new_versions, p_states,
        p_ev_streams, p_ev_versions, p_ev_types, p_ev_schemas, p_ev_data, p_ev_meta);

    SELECT r.stream INTO moved
      FROM unnest(p_read_streams, p_read_versions) AS r(stream, version)
      LEFT JOIN streams s ON s.guild_id = p_guild AND s.stream = r.stream
     WHERE coalesce(s.version, 0) <> r.version
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream %/% was read at an older version', p_guild, moved
            USING ERRCODE = 'LX409';
    END IF;
    RETURN positions;
END;
$$;
