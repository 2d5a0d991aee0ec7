-- The histogram bucket of a leaderboard score, exactly as `score_bucket` in
-- projections/periods.py computes it (tests/test_projections_leaderboard.py compares the two):
-- the live leaderboards projector moves histogram counts in the statement that updates the
-- scores. Scores below 128 have a bucket each; above, a bucket holds the scores that share their
-- top 8 bits. Negative scores mirror positive ones.
CREATE FUNCTION ledger_score_bucket(score bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN score < 0 THEN -b.bucket ELSE b.bucket END
      FROM (SELECT abs(score) AS magnitude) AS m
     CROSS JOIN LATERAL (
           SELECT length(ltrim(m.magnitude::bit(64)::text, '0')) - 8 AS shift) AS s
     CROSS JOIN LATERAL (
           SELECT CASE WHEN m.magnitude < 128 THEN m.magnitude
                       ELSE s.shift * 128 + (m.magnitude >> s.shift) END AS bucket) AS b
$$;
