-- Read checks for an append: the streams a batch read but did not write (the guild's config, a
-- transfer's refused side, a member whose grant was refused), with the versions its decisions
-- saw, and the ids of the commands it refused. If a read stream has moved on, the append fails
-- with LX409 (retry from fresh state); if a refused id was recorded after all, it fails as a
-- duplicate (answer from the record: a refusal is not recorded, so this is what tells a retried
-- command from a new one). Writers decide from state rows they keep in memory (D20); a written
-- row is already checked by its expected version, and this closes the same gap for rows only
-- read.
--
-- Called as `ledger_check_reads(ledger_append(...), ...)`: the append is its argument, so it
-- runs first and the check comes after the writes have taken their row locks, as late as it
-- can be before the commit. `ledger_append` itself (001) is unchanged, for processes of the
-- previous release during a rolling upgrade. Returns the append's positions.
CREATE FUNCTION ledger_check_reads(
    p_positions      bigint[],
    p_guild          bigint,
    p_read_streams   bigint[],
    p_read_versions  bigint[],
    p_unseen_ids     text[]
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
BEGIN
    SELECT r.stream INTO moved
      FROM unnest(p_read_streams, p_read_versions) AS r(stream, version)
      LEFT JOIN streams s ON s.guild_id = p_guild AND s.stream = r.stream
     WHERE coalesce(s.version, 0) <> r.version
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream %/% was read at an older version', p_guild, moved
            USING ERRCODE = 'LX409';
    END IF;
    IF EXISTS (SELECT 1 FROM commands
                WHERE guild_id = p_guild AND command_id = ANY(p_unseen_ids)) THEN
        RAISE EXCEPTION 'a command of this batch was already recorded'
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'commands_pkey';
    END IF;
    RETURN p_positions;
END;
$$;
