-- Issuance ledger and change counters (issue 9).

-- One row per issued access token: what it is bound to and how long it lives, never the token itself.
CREATE TABLE issued_tokens (
    jti        text PRIMARY KEY,
    kid        text NOT NULL,
    subject    text NOT NULL,
    audience   text NOT NULL,  -- JSON array of strings
    scope      text NOT NULL,  -- space-separated scope-tokens, '' for none
    binding    text NOT NULL,  -- the confirmation method and value, e.g. 'x5t#S256=<base64url>'
    issued_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at >= issued_at)
);

-- The blast radius of a kid (keys revoke) and pruning; a per-subject index comes with the revocation issue.
CREATE INDEX issued_tokens_by_kid ON issued_tokens (kid, expires_at);
CREATE INDEX issued_tokens_by_expiry ON issued_tokens (expires_at);

-- One counter per topic, bumped (with a NOTIFY on channel spiffe_broker_changes) in the transaction that changes
-- the topic's state; a replica that lost its LISTEN connection re-reads everything after it reconnects.
CREATE TABLE change_counters (
    topic   text PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 0)
);

INSERT INTO change_counters (topic, version) VALUES ('keyring', 0);
