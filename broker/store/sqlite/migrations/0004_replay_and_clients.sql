-- Replay cache and client registry (issue 11). Times are INTEGER microseconds since the Unix epoch, UTC.

-- One row per jti seen (RFC 7523 §3 item 7, RFC 9449 §11.1): key is replay_key()'s SHA-256 digest in hex, never
-- the jti itself. A row expired at the time of an add may be taken over by it (an upsert under the write lock).
CREATE TABLE replay_cache (
    key        TEXT PRIMARY KEY CHECK (length(key) = 64),
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX replay_cache_by_expiry ON replay_cache (expires_at);

-- One row per registered client (RFC 7523 §2.2 private_key_jwt; RFC 7591 §2 metadata names).
CREATE TABLE clients (
    client_id              TEXT PRIMARY KEY,
    spiffe_id              TEXT NOT NULL,
    jwks                   TEXT,             -- the inline JWK Set as JSON (public keys only), or NULL
    jwks_uri               TEXT,             -- https URL, or NULL: exactly one of jwks and jwks_uri
    algorithms             TEXT NOT NULL,    -- JSON array of JWS alg names
    max_assertion_lifetime INTEGER NOT NULL CHECK (max_assertion_lifetime BETWEEN 1 AND 300),
    disabled               INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    CHECK ((jwks IS NULL) <> (jwks_uri IS NULL))
) STRICT;

INSERT INTO change_counters (topic, version) VALUES ('clients', 0)
    ON CONFLICT (topic) DO NOTHING;  -- a store may have published the topic before it had a registry
