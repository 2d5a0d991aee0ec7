-- Read tables folded from the log by the projectors in `projections/projectors/`. Each is owned
-- by exactly one projector; every key starts with guild_id (distribution by guild on Citus).
-- Indexes are left unnamed on purpose: a rebuild recreates them with `LIKE ... INCLUDING ALL`,
-- which generates the same default names.

-- wallets projector: LC per member. balance = minted - burned + received - sent.
CREATE TABLE balances (
    guild_id    bigint NOT NULL,
    member_id   bigint NOT NULL,
    balance     bigint NOT NULL,
    earned      bigint NOT NULL,   -- LC gained (the "LC earned" leaderboard metric)
    minted      bigint NOT NULL,   -- created for the member: start, daily, invites, payouts, grants
    burned      bigint NOT NULL,   -- destroyed from the member: bets, admin takes
    received    bigint NOT NULL,   -- transfers in
    sent        bigint NOT NULL,   -- transfers out
    PRIMARY KEY (guild_id, member_id)
);

-- levels projector: XP and the level it gives (a pure function of XP), with its sources.
CREATE TABLE levels (
    guild_id      bigint  NOT NULL,
    member_id     bigint  NOT NULL,
    xp            bigint  NOT NULL,
    level         integer NOT NULL,
    messages      bigint  NOT NULL,   -- messages that earned XP
    voice_seconds bigint  NOT NULL,
    PRIMARY KEY (guild_id, member_id)
);

-- inventory projector: item counts (rows at 0 are removed) and the multiplier in force.
CREATE TABLE inventory (
    guild_id  bigint NOT NULL,
    member_id bigint NOT NULL,
    item      text   NOT NULL,
    quantity  bigint NOT NULL,
    PRIMARY KEY (guild_id, member_id, item)
);

CREATE TABLE active_multipliers (
    guild_id      bigint      NOT NULL,
    member_id     bigint      NOT NULL,
    item          text        NOT NULL,
    factor_pct    integer     NOT NULL,
    games_left    integer     NOT NULL,
    activated_at  timestamptz NOT NULL,
    PRIMARY KEY (guild_id, member_id)
);

-- moderation projector: every warning with its state, and the full moderation trail.
CREATE TABLE warnings (
    guild_id        bigint      NOT NULL,
    member_id       bigint      NOT NULL,
    warning_id      text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'pardoned', 'expired')),
    moderator_id    bigint      NOT NULL,
    reason          text        NOT NULL,
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    issued_position bigint      NOT NULL,
    closed_at       timestamptz,
    closed_by       bigint,
    close_reason    text,
    PRIMARY KEY (guild_id, member_id, warning_id)
);

-- The scheduler's "which warnings are due to expire" question.
CREATE INDEX ON warnings (guild_id, expires_at) WHERE status = 'active';

CREATE TABLE moderation_log (
    guild_id          bigint      NOT NULL,
    position          bigint      NOT NULL,
    member_id         bigint      NOT NULL,
    action            text        NOT NULL,   -- warn | pardon | expire | threshold
    moderator_id      bigint      NOT NULL,   -- 0 for the scheduler / automatic actions
    warning_id        text        NOT NULL,   -- '' for threshold actions
    reason            text        NOT NULL,
    at                timestamptz NOT NULL,
    active_warnings   integer     NOT NULL,   -- threshold: warnings in force; else 0
    duration_minutes  integer     NOT NULL,   -- threshold: timeout length; else 0
    PRIMARY KEY (guild_id, position)
);

CREATE INDEX ON moderation_log (guild_id, member_id, position);

-- activity projector: counters quests and achievements can use.
CREATE TABLE activity_counters (
    guild_id              bigint      NOT NULL,
    member_id             bigint      NOT NULL,
    messages              bigint      NOT NULL,
    voice_ticks           bigint      NOT NULL,
    voice_seconds         bigint      NOT NULL,
    reactions_received    bigint      NOT NULL,
    games_played          bigint      NOT NULL,
    games_won             bigint      NOT NULL,
    dailies_claimed       bigint      NOT NULL,
    best_daily_streak     bigint      NOT NULL,
    invites_made          bigint      NOT NULL,
    transfers_sent        bigint      NOT NULL,
    transfers_received    bigint      NOT NULL,
    lc_sent               bigint      NOT NULL,
    lc_received           bigint      NOT NULL,
    jackpots_opened       bigint      NOT NULL,
    multipliers_activated bigint      NOT NULL,
    items_received        bigint      NOT NULL,
    warnings_received     bigint      NOT NULL,
    first_active_at       timestamptz NOT NULL,
    last_active_at        timestamptz NOT NULL,
    PRIMARY KEY (guild_id, member_id)
);
