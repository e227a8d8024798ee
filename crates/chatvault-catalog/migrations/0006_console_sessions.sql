-- Console sign-ins. The browser holds the session token; the catalog only its SHA-256,
-- so a copy of the catalog cannot be replayed as anyone's session. A session acts with
-- its key's rights as they are at each request: revoking the key ends it.
CREATE TABLE console_sessions (
    token_sha256 TEXT PRIMARY KEY,
    key_id       TEXT NOT NULL,
    created_us   BIGINT NOT NULL,
    last_seen_us BIGINT NOT NULL,
    -- The absolute end, however active the session is.
    expires_us   BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_us);
