-- The archive segment holding each chat's first record, so that reading a chat's whole
-- history can start there instead of at the archive's beginning. NULL for chats first
-- recorded before this column existed: their history is looked for from the start.
ALTER TABLE chats ADD COLUMN first_segment BIGINT;
