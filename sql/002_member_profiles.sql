-- Personal data (names) lives outside the log, so a member can be forgotten (GDPR) without
-- touching an event or breaking the hash chain.
CREATE TABLE member_profiles (
    guild_id     bigint      NOT NULL,
    member_id    bigint      NOT NULL,
    display_name text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (guild_id, member_id)
);
