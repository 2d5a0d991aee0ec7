-- A rebuild creates read tables in a shadow schema and moves them in, so grants made
-- "IN SCHEMA public" never reach them: grant the application role its privileges on tables
-- the owner creates anywhere, and repair the read tables already swapped in. The log and the
-- append-only records keep exactly the privileges 004 gave them.
DO $$
DECLARE
    read_table text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        RETURN;
    END IF;
    ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ledger_app;
    ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO ledger_app;
    FOR read_table IN
        SELECT tablename FROM pg_tables
         WHERE schemaname = 'public'
           AND tablename NOT IN ('events', 'commands', 'event_hashes', 'streams',
                                 'chain_heads', 'chain_checkpoint', 'schema_migrations')
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO ledger_app', read_table);
    END LOOP;
END;
$$;
