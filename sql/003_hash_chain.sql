-- Tamper evidence: each guild's events chained by hash in delivery order (tx, position),
-- sealed after commit by one sealer at a time, so appends never wait for it (DESIGN §3).
CREATE TABLE event_hashes (
    guild_id  bigint NOT NULL,
    position  bigint NOT NULL,
    seq       bigint NOT NULL,  -- the event's place in its guild's chain, from 1
    hash      bytea  NOT NULL,  -- sha256(previous hash || canonical event)
    PRIMARY KEY (guild_id, position),
    UNIQUE (guild_id, seq)
);

-- The last sealed link of each guild's chain (what a new event is chained to).
CREATE TABLE chain_heads (
    guild_id  bigint PRIMARY KEY,
    seq       bigint NOT NULL,
    position  bigint NOT NULL,
    hash      bytea  NOT NULL
);

-- The sealer's place in delivery order, advanced with the hashes it writes.
CREATE TABLE chain_checkpoint (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    tx        xid8    NOT NULL DEFAULT '0'::xid8,
    position  bigint  NOT NULL DEFAULT 0
);
INSERT INTO chain_checkpoint DEFAULT VALUES;
