-- Signing keyring and audit journal (issue 9). Times are INTEGER microseconds since the Unix epoch, UTC.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired', 'revoked')),
    wrapped_key  BLOB NOT NULL,
    kek_id       TEXT NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    retiring_at  INTEGER,
    retired_at   INTEGER
) STRICT;

-- At most one signing key (SQLite "Partial Indexes", §3: a unique partial index).
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE audit_records (
    seq       INTEGER PRIMARY KEY CHECK (seq > 0),
    at        INTEGER NOT NULL,
    event     TEXT NOT NULL,
    body      BLOB NOT NULL,
    prev_hash BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash      BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

-- Append-only: the journal refuses changes and deletions (SQLite "CREATE TRIGGER", RAISE(ABORT, ...)).
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only');
END;

CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit_records is append-only');
END;
