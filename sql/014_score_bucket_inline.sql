-- ledger_score_bucket again, as single expressions the planner inlines into the calling query:
-- the 013 body (a SELECT with FROM) ran as a function call per row, about 5 us, which made
-- counting a rebuilt histogram from 2M score rows take 9 s. Same results (the test compares
-- both with `score_bucket` in projections/periods.py). Not STRICT: the planner inlines a strict
-- function only when its body is strict too, and CASE is not (NULL still gives NULL).

-- The number of bits of a positive bigint: whole hex digits, then the top digit's bits.
CREATE FUNCTION ledger_bit_length(magnitude bigint) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 4 * (length(to_hex(magnitude)) - 1)
     + CASE WHEN magnitude >> (4 * (length(to_hex(magnitude)) - 1)) >= 8 THEN 4
            WHEN magnitude >> (4 * (length(to_hex(magnitude)) - 1)) >= 4 THEN 3
            WHEN magnitude >> (4 * (length(to_hex(magnitude)) - 1)) >= 2 THEN 2
            ELSE 1 END;

CREATE OR REPLACE FUNCTION ledger_score_bucket(score bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN score > -128 AND score < 128 THEN score
    WHEN score > 0 THEN (ledger_bit_length(score) - 8) * 128 + (score >> (ledger_bit_length(score) - 8))
    ELSE -((ledger_bit_length(-score) - 8) * 128 + ((-score) >> (ledger_bit_length(-score) - 8)))
END;
