-- Governed API-key exceptions (issue 12). Times are INTEGER microseconds since the Unix epoch, UTC.

-- One row per exception; names are never reused (a revoked one keeps its row). revision is the compare-and-set
-- token of every change. body holds the descriptive fields as JSON (broker/store/apikey_rows.py), never a secret.
CREATE TABLE apikey_exceptions (
    name            TEXT PRIMARY KEY,
    revision        INTEGER NOT NULL CHECK (revision >= 1),
    state           TEXT NOT NULL CHECK (state IN ('active', 'suspended', 'revoked')),
    current_version INTEGER NOT NULL CHECK (current_version >= 1),
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    body            TEXT NOT NULL
) STRICT;

-- One row per secret version: only sealed bytes (AES-256-GCM envelope, broker/_sealing.py) bound to (name,
-- version) as associated data, and the id of the KEK that wrapped its data key. Never the secret itself.
CREATE TABLE apikey_versions (
    name          TEXT NOT NULL REFERENCES apikey_exceptions (name),
    version       INTEGER NOT NULL CHECK (version >= 1),
    sealed        BLOB NOT NULL,
    kek_id        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    superseded_at INTEGER,
    PRIMARY KEY (name, version)
) STRICT;

-- Aggregated uses, one row per exception, workload, version and target: the sidecars' reports add to count.
CREATE TABLE apikey_uses (
    name         TEXT NOT NULL REFERENCES apikey_exceptions (name),
    spiffe_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    target       TEXT NOT NULL,
    count        INTEGER NOT NULL CHECK (count >= 1),
    last_used_at INTEGER NOT NULL,
    PRIMARY KEY (name, spiffe_id, version, target)
) STRICT;

INSERT INTO change_counters (topic, version) VALUES ('apikeys', 0)
    ON CONFLICT (topic) DO NOTHING;  -- a store may have published the topic before it had a registry

-- The revocation log learns the exception.withdrawn entry. SQLite cannot change a CHECK constraint in place, so
-- the table is rebuilt with its rows and indexes (SQLite "ALTER TABLE", §7 "Making Other Kinds Of Table Schema
-- Changes"); nothing refers to it by foreign key, so this is safe with foreign_keys on, inside the migration's
-- transaction.
CREATE TABLE revocation_log_0005 (
    seq          INTEGER PRIMARY KEY CHECK (seq > 0),
    kind         TEXT NOT NULL
                 CHECK (kind IN ('token.revoked', 'subject.quarantined', 'subject.released', 'key.revoked',
                                 'exception.withdrawn')),
    target       TEXT NOT NULL,     -- the jti, the subject pattern, the kid or the API-key exception's name
    body         TEXT NOT NULL,     -- the event as JSON, times in microseconds; a quarantine's reason included
    cutoff_until INTEGER,           -- quarantines only: tokens issued at or before the quarantine stay cut off
    kept_until   INTEGER,           -- prune after this; NULL: until released
    created_at   INTEGER NOT NULL
) STRICT;

INSERT INTO revocation_log_0005 (seq, kind, target, body, cutoff_until, kept_until, created_at)
    SELECT seq, kind, target, body, cutoff_until, kept_until, created_at FROM revocation_log;

DROP TABLE revocation_log;

ALTER TABLE revocation_log_0005 RENAME TO revocation_log;

CREATE INDEX revocation_log_by_kept_until ON revocation_log (kept_until) WHERE kept_until IS NOT NULL;
CREATE INDEX revocation_log_quarantines ON revocation_log (target) WHERE kind = 'subject.quarantined';
