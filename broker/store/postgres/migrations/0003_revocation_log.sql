-- Revocation log (issue 10).

-- One row per entry: seq is assigned from revocation_meta.head under that row's lock, 1, 2, 3, ... in commit order.
CREATE TABLE revocation_log (
    seq          bigint PRIMARY KEY CHECK (seq > 0),
    kind         text NOT NULL
                 CHECK (kind IN ('token.revoked', 'subject.quarantined', 'subject.released', 'key.revoked')),
    target       text NOT NULL,     -- the jti, the subject pattern ('spiffe://td/path' or '.../path/*') or the kid
    body         text NOT NULL,     -- the event as JSON, times in microseconds; a quarantine's reason included
    cutoff_until timestamptz,       -- quarantines only: tokens issued at or before the quarantine stay cut off
    kept_until   timestamptz,       -- prune after this; NULL: until released
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX revocation_log_by_kept_until ON revocation_log (kept_until) WHERE kept_until IS NOT NULL;
CREATE INDEX revocation_log_quarantines ON revocation_log (target) WHERE kind = 'subject.quarantined';

-- One row: the feed's name (random, taken once, here), the last seq assigned, the highest seq pruned.
-- gen_random_uuid() draws from pg_strong_random (PostgreSQL 15 docs, 9.14 "UUID Functions").
CREATE TABLE revocation_meta (
    singleton integer PRIMARY KEY CHECK (singleton = 1),
    feed_id   text NOT NULL,
    head      bigint NOT NULL CHECK (head >= 0),
    horizon   bigint NOT NULL CHECK (horizon >= 0 AND horizon <= head)
);

INSERT INTO revocation_meta (singleton, feed_id, head, horizon)
    VALUES (1, left(md5(gen_random_uuid()::text), 16), 0, 0);

INSERT INTO change_counters (topic, version) VALUES ('revocations', 0)
    ON CONFLICT (topic) DO NOTHING;  -- a store may have published the topic before it had a log

-- A subject's live tokens (quarantine): equality or a range over the prefix in code point order, whatever the
-- database's collation (the "C" collation, PostgreSQL 15 docs, 24.2 "Collation Support").
CREATE INDEX issued_tokens_by_subject ON issued_tokens (subject COLLATE "C", expires_at);
