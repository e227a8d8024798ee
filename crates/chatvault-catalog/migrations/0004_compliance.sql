-- The audit log: who did what, when, from where. Append-only by contract (the catalog
-- API has no update or delete for it) and tamper-evident by construction: each row
-- stores the SHA-256 of its own fields and of the row before, so `chatvault audit
-- verify` finds any edited, removed or reordered row. (Triggers could forbid UPDATE and
-- DELETE, but SQLite and PostgreSQL spell them differently and these migrations are
-- shared; the chain detects what a trigger would only make harder.)
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at_us       BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    address     TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    -- A JSON object; hashed exactly as stored.
    detail      TEXT NOT NULL,
    prev_sha256 TEXT NOT NULL,
    sha256      TEXT NOT NULL
);
CREATE INDEX audit_log_by_action ON audit_log (action, at_us);

-- Legal holds: chats they cover are exempt from retention and erasure until released.
-- A hold names one chat, or a site and an inclusive range of Started dates
-- (YYYY-MM-DD, either end open), or a visitor email (lower case).
CREATE TABLE legal_holds (
    id          TEXT PRIMARY KEY,
    chat_uid    TEXT,
    site_key    BIGINT,
    from_date   TEXT,
    to_date     TEXT,
    email       TEXT,
    reason      TEXT NOT NULL,
    placed_by   TEXT NOT NULL,
    placed_us   BIGINT NOT NULL,
    released_by TEXT,
    released_us BIGINT
);
