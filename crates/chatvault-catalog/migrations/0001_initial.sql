-- One schema for SQLite and PostgreSQL: only types and syntax both accept.
-- Booleans are BIGINT 0/1 and times are microseconds since the Unix epoch (UTC).

-- The current state of every chat the archive has seen.
CREATE TABLE chats (
    chat_uid        TEXT PRIMARY KEY,
    site_key        BIGINT NOT NULL,
    version         BIGINT NOT NULL,
    content_hash    TEXT NOT NULL,
    archive_seq     BIGINT NOT NULL,
    archive_segment BIGINT NOT NULL,
    deleted         BIGINT NOT NULL,
    first_seen_us   BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL
);
CREATE INDEX chats_by_site ON chats (site_key);

-- The archive position the catalog has applied up to (exclusive). One row.
CREATE TABLE archive_watermark (
    id       BIGINT PRIMARY KEY,
    next_seq BIGINT NOT NULL
);
INSERT INTO archive_watermark (id, next_seq) VALUES (1, 0);

-- Where each source has got to (folder: nothing; Cosmos: continuation/_ts).
CREATE TABLE source_checkpoints (
    source     TEXT PRIMARY KEY,
    position   TEXT NOT NULL,
    updated_us BIGINT NOT NULL
);

-- Running totals per source and outcome (accepted, updated, unchanged, rejected, deleted).
CREATE TABLE ingest_stats (
    source    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    documents BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    PRIMARY KEY (source, outcome)
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    key_sha256 TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    sites      TEXT,
    created_us BIGINT NOT NULL,
    revoked_us BIGINT
);
