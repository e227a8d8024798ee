-- The columnar store's registry: which Parquet files make up the current state.
-- Readers take the set in one query; writers change it in one transaction, so a reader
-- sees the files before a flush or compaction, or after it, never half.
CREATE TABLE store_files (
    path       TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    site_key   BIGINT NOT NULL,
    month      TEXT NOT NULL,
    row_count  BIGINT NOT NULL,
    byte_count BIGINT NOT NULL,
    created_us BIGINT NOT NULL
);
CREATE INDEX store_files_by_table ON store_files (table_name, site_key, month);

-- Files of (ChatUID, HideBelow) pairs: rows of that chat with an older archive seq are
-- superseded or deleted. Compaction applies and removes them.
CREATE TABLE store_deletes (
    path       TEXT PRIMARY KEY,
    row_count  BIGINT NOT NULL,
    created_us BIGINT NOT NULL
);

-- The first archive seq the Parquet files do not yet hold (exclusive watermark).
CREATE TABLE store_state (
    id          BIGINT PRIMARY KEY,
    flushed_seq BIGINT NOT NULL
);
INSERT INTO store_state (id, flushed_seq) VALUES (1, 0);
