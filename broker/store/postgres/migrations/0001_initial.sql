-- Signing keyring and audit journal (issue 9).
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    algorithm    text NOT NULL,
    state        text NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired', 'revoked')),
    wrapped_key  bytea NOT NULL,
    kek_id       text NOT NULL,
    public_jwk   text NOT NULL,
    created_at   timestamptz NOT NULL,
    activated_at timestamptz,
    retiring_at  timestamptz,
    retired_at   timestamptz
);

-- At most one signing key (PostgreSQL 15 docs, 11.8 "Partial Indexes", example 11.3).
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE audit_records (
    seq       bigint PRIMARY KEY CHECK (seq > 0),
    at        timestamptz NOT NULL,
    event     text NOT NULL,
    body      bytea NOT NULL,
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash      bytea NOT NULL CHECK (octet_length(hash) = 32)
);

-- Append-only: the journal refuses changes and deletions (PostgreSQL 15 docs, 43.10 "Trigger Functions").
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only';
END;
$$;

CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
-- TRUNCATE bypasses row triggers (43.10): refuse it too.
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
