-- Issuance ledger and change counters (issue 9). Times are INTEGER microseconds since the Unix epoch, UTC.

-- One row per issued access token: what it is bound to and how long it lives, never the token itself.
CREATE TABLE issued_tokens (
    jti        TEXT PRIMARY KEY,
    kid        TEXT NOT NULL,
    subject    TEXT NOT NULL,
    audience   TEXT NOT NULL,  -- JSON array of strings
    scope      TEXT NOT NULL,  -- space-separated scope-tokens, '' for none
    binding    TEXT NOT NULL,  -- the confirmation method and value, e.g. 'x5t#S256=<base64url>'
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL CHECK (expires_at >= issued_at)
) STRICT;

-- The blast radius of a kid (keys revoke) and pruning; a per-subject index comes with the revocation issue.
CREATE INDEX issued_tokens_by_kid ON issued_tokens (kid, expires_at);
CREATE INDEX issued_tokens_by_expiry ON issued_tokens (expires_at);

-- One counter per topic, bumped in the transaction that changes the topic's state; replicas poll it.
CREATE TABLE change_counters (
    topic   TEXT PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version >= 0)
) STRICT;

INSERT INTO change_counters (topic, version) VALUES ('keyring', 0);
