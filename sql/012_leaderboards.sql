-- leaderboards projector: scores per (board, period) and a score histogram for O(buckets) ranks.
-- board: 'xp' (XP gained) or 'lc' (LC earned). period: 'all', 'day:YYYY-MM-DD',
-- 'week:YYYY-Www' (ISO week), 'month:YYYY-MM', from the event's `at` in UTC. Past periods are kept.
CREATE TABLE leaderboard_scores (
    guild_id  bigint NOT NULL,
    board     text   NOT NULL,
    period    text   NOT NULL,
    member_id bigint NOT NULL,
    score     bigint NOT NULL,
    PRIMARY KEY (guild_id, board, period, member_id)
);

-- Leaderboard pages (read backwards: score DESC, member_id DESC, keyset on (score, member_id))
-- and the small in-bucket count of a rank.
CREATE INDEX ON leaderboard_scores (guild_id, board, period, score, member_id);

-- How many members of a (board, period) have a score in each bucket (see
-- projections/periods.py for the bucket function). Buckets at 0 members are deleted.
CREATE TABLE leaderboard_buckets (
    guild_id  bigint NOT NULL,
    board     text   NOT NULL,
    period    text   NOT NULL,
    bucket    bigint NOT NULL,
    members   bigint NOT NULL,
    PRIMARY KEY (guild_id, board, period, bucket)
);
