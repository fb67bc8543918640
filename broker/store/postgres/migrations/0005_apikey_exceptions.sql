-- Governed API-key exceptions (issue 12).

-- One row per exception; names are never reused (a revoked one keeps its row). revision is the compare-and-set
-- token of every change. body holds the descriptive fields as JSON (broker/store/apikey_rows.py), never a secret.
CREATE TABLE apikey_exceptions (
    name            text PRIMARY KEY,
    revision        bigint NOT NULL CHECK (revision >= 1),
    state           text NOT NULL CHECK (state IN ('active', 'suspended', 'revoked')),
    current_version integer NOT NULL CHECK (current_version >= 1),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    body            text NOT NULL
);

-- One row per secret version: only sealed bytes (AES-256-GCM envelope, broker/_sealing.py) bound to (name,
-- version) as associated data, and the id of the KEK that wrapped its data key. Never the secret itself.
CREATE TABLE apikey_versions (
    name          text NOT NULL REFERENCES apikey_exceptions (name),
    version       integer NOT NULL CHECK (version >= 1),
    sealed        bytea NOT NULL,
    kek_id        text NOT NULL,
    created_at    timestamptz NOT NULL,
    superseded_at timestamptz,
    PRIMARY KEY (name, version)
);

-- Aggregated uses, one row per exception, workload, version and target: the sidecars' reports add to count.
CREATE TABLE apikey_uses (
    name         text NOT NULL REFERENCES apikey_exceptions (name),
    spiffe_id    text NOT NULL,
    version      integer NOT NULL,
    target       text NOT NULL,
    count        bigint NOT NULL CHECK (count >= 1),
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (name, spiffe_id, version, target)
);

INSERT INTO change_counters (topic, version) VALUES ('apikeys', 0)
    ON CONFLICT (topic) DO NOTHING;  -- a store may have published the topic before it had a registry

-- The revocation log learns the exception.withdrawn entry: the column CHECK of 0003 got PostgreSQL's default name
-- <table>_<column>_check (PostgreSQL 15 docs, SQL command CREATE TABLE, "CONSTRAINT constraint_name"); replaced
-- in one statement, checked against the rows there (ALTER TABLE, "ADD table_constraint").
ALTER TABLE revocation_log
    DROP CONSTRAINT revocation_log_kind_check,
    ADD CONSTRAINT revocation_log_kind_check
        CHECK (kind IN ('token.revoked', 'subject.quarantined', 'subject.released', 'key.revoked',
                        'exception.withdrawn'));
