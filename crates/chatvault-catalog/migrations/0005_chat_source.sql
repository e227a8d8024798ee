-- Which source stored each chat's latest archive record (webhook, folder, import, cosmos,
-- admin), so that a source mirroring deletions from its upstream (the Cosmos DB source
-- with mirror_deletes) only ever deletes chats whose current version it wrote itself.
-- NULL for chats whose latest record was applied before this column existed: no source
-- can claim them, so no mirror deletes them until a new version arrives.
ALTER TABLE chats ADD COLUMN source TEXT;
