-- Least privilege: the services run as `ledger_app`, which may append to and read the log but
-- never rewrite it. Roles are cluster-wide, so it is created only if missing; where the
-- migrating user may not create roles (some managed services), the operator creates it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        CREATE ROLE ledger_app LOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create role ledger_app here; create it and grant as in 004_app_role.sql';
END;
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO ledger_app', current_database());
        GRANT USAGE ON SCHEMA public TO ledger_app;
        -- the log: append and read only
        GRANT SELECT, INSERT ON events TO ledger_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON events FROM ledger_app;
        -- write-side state, idempotency records, personal data, chain
        GRANT SELECT, INSERT, UPDATE ON streams, chain_heads, chain_checkpoint TO ledger_app;
        GRANT SELECT, INSERT ON commands, event_hashes TO ledger_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON member_profiles TO ledger_app;
        GRANT SELECT ON schema_migrations TO ledger_app;
        -- tables later migrations create (read tables, checkpoints, outbox) are the workers'
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ledger_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ledger_app;
    END IF;
END;
$$;
