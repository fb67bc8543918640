-- Revocation log (issue 10). Times are INTEGER microseconds since the Unix epoch, UTC.

-- One row per entry: seq is assigned from revocation_meta.head under the write lock, 1, 2, 3, ... in commit order.
CREATE TABLE revocation_log (
    seq          INTEGER PRIMARY KEY CHECK (seq > 0),
    kind         TEXT NOT NULL
                 CHECK (kind IN ('token.revoked', 'subject.quarantined', 'subject.released', 'key.revoked')),
    target       TEXT NOT NULL,     -- the jti, the subject pattern ('spiffe://td/path' or '.../path/*') or the kid
    body         TEXT NOT NULL,     -- the event as JSON, times in microseconds; a quarantine's reason included
    cutoff_until INTEGER,           -- quarantines only: tokens issued at or before the quarantine stay cut off
    kept_until   INTEGER,           -- prune after this; NULL: until released
    created_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX revocation_log_by_kept_until ON revocation_log (kept_until) WHERE kept_until IS NOT NULL;
CREATE INDEX revocation_log_quarantines ON revocation_log (target) WHERE kind = 'subject.quarantined';

-- One row: the feed's name (random, taken once, here), the last seq assigned, the highest seq pruned.
CREATE TABLE revocation_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    feed_id   TEXT NOT NULL,
    head      INTEGER NOT NULL CHECK (head >= 0),
    horizon   INTEGER NOT NULL CHECK (horizon >= 0 AND horizon <= head)
) STRICT;

INSERT INTO revocation_meta (singleton, feed_id, head, horizon) VALUES (1, lower(hex(randomblob(8))), 0, 0);

INSERT INTO change_counters (topic, version) VALUES ('revocations', 0)
    ON CONFLICT (topic) DO NOTHING;  -- a store may have published the topic before it had a log

-- A subject's live tokens (quarantine): equality or a range over the prefix, in code point order (BINARY).
CREATE INDEX issued_tokens_by_subject ON issued_tokens (subject, expires_at);
