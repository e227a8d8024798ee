use chatvault_model::ContentHash;
use futures::TryStreamExt;
use sqlx::Row;
use std::borrow::Cow;
use std::collections::HashMap;

use crate::{query_err, Backend, Catalog, CatalogError, Result};

/// The catalog's view of one chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatState {
    pub chat_uid: String,
    pub site_key: i64,
    /// 1 for the first version; every upsert or delete the archive records adds one.
    pub version: i64,
    pub content_hash: ContentHash,
    pub archive_seq: u64,
    pub archive_segment: u64,
    pub deleted: bool,
}

/// One archive record as the catalog applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChange {
    pub seq: u64,
    pub segment: u64,
    pub chat_uid: String,
    pub site_key: i64,
    pub deleted: bool,
    pub content_hash: ContentHash,
    pub received_at_us: i64,
    /// The source that sent the record (`Source::as_str` of the archive entry).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngestStat {
    pub source: String,
    pub outcome: String,
    pub documents: i64,
    pub bytes: i64,
}

/// SQLite's default limit on bound parameters is far above this; it keeps statements short.
const LOOKUP_CHUNK: usize = 500;
/// Chat versions recorded per statement: one statement per version made a batch of
/// 2,000 documents 2,000 round trips to the database.
const APPLY_CHUNK: usize = 500;
/// Parameters bound for each chat version recorded.
const VERSION_PARAMETERS: usize = 10;

/// A value bound to a placeholder.
enum Value<'a> {
    Text(Cow<'a, str>),
    Int(i64),
}

/// One statement with its values in placeholder order.
struct Statement<'a> {
    sql: String,
    values: Vec<Value<'a>>,
    /// What a failure of the statement is reported as.
    context: &'static str,
}

impl<'a> Statement<'a> {
    /// The statements as one, for SQLite, whose anonymous placeholders bind in order
    /// across all the statements of a string.
    fn joined(statements: Vec<Statement<'a>>) -> Statement<'a> {
        let sql = statements
            .iter()
            .map(|s| s.sql.as_str())
            .collect::<Vec<_>>()
            .join(";\n");
        Statement {
            sql,
            values: statements.into_iter().flat_map(|s| s.values).collect(),
            context: "recording an archived batch",
        }
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        self.values
            .iter()
            .fold(sqlx::query(&self.sql), |query, value| match value {
                Value::Text(text) => query.bind(text.as_ref()),
                Value::Int(int) => query.bind(*int),
            })
    }
}

/// `changes` in rounds that each touch a chat at most once (PostgreSQL refuses an upsert
/// that changes one row twice), a chat's changes in successive rounds in their order.
fn apply_rounds(changes: &[AppliedChange]) -> Vec<Vec<&AppliedChange>> {
    let mut rounds: Vec<Vec<&AppliedChange>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(changes.len());
    for change in changes {
        let round = seen
            .entry(change.chat_uid.as_str())
            .and_modify(|r| *r += 1)
            .or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(change);
    }
    rounds
}

const STATE_COLUMNS: &str =
    "chat_uid, site_key, version, content_hash, archive_seq, archive_segment, deleted";

fn state_from_row(row: &sqlx::any::AnyRow) -> Result<ChatState> {
    let get_i64 = |name: &str| {
        row.try_get::<i64, _>(name)
            .map_err(query_err("reading a chat row"))
    };
    let hash_text: String = row
        .try_get("content_hash")
        .map_err(query_err("reading a chat row"))?;
    let content_hash = ContentHash::from_hex(&hash_text).ok_or_else(|| {
        CatalogError::Invalid(format!("content hash {hash_text:?} is not 64 hex digits"))
    })?;
    Ok(ChatState {
        chat_uid: row
            .try_get("chat_uid")
            .map_err(query_err("reading a chat row"))?,
        site_key: get_i64("site_key")?,
        version: get_i64("version")?,
        content_hash,
        archive_seq: u64::try_from(get_i64("archive_seq")?).unwrap_or_default(),
        archive_segment: u64::try_from(get_i64("archive_segment")?).unwrap_or_default(),
        deleted: get_i64("deleted")? != 0,
    })
}

/// A connection inside a transaction sent as one string. Unless `settled` (committed or
/// rolled back), it may still be inside that transaction when dropped (after a failed
/// rollback, or when whoever awaited the apply gave up), so it is closed rather than
/// handed to the next user of the pool.
struct UntilSettled {
    conn: sqlx::pool::PoolConnection<sqlx::Any>,
    settled: bool,
}

impl Drop for UntilSettled {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.close_on_drop();
        }
    }
}

impl Catalog {
    /// Current state of each of `uids` that the catalog knows.
    pub async fn lookup(&self, uids: &[&str]) -> Result<HashMap<String, ChatState>> {
        let mut out = HashMap::with_capacity(uids.len());
        for chunk in uids.chunks(LOOKUP_CHUNK) {
            let placeholders = self.placeholders(chunk.len());
            let sql = format!(
                "SELECT {STATE_COLUMNS} FROM chats WHERE chat_uid IN ({})",
                placeholders.join(",")
            );
            let mut query = sqlx::query(&sql);
            for uid in chunk {
                query = query.bind(*uid);
            }
            for row in query
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("looking up chats"))?
            {
                let state = state_from_row(&row)?;
                out.insert(state.chat_uid.clone(), state);
            }
        }
        Ok(out)
    }

    /// The archive segment of the chat's first record, when the catalog recorded it (not
    /// for chats first recorded before it did).
    pub async fn first_segment(&self, uid: &str) -> Result<Option<u64>> {
        let segment: Option<Option<i64>> =
            sqlx::query_scalar("SELECT first_segment FROM chats WHERE chat_uid = $1")
                .bind(uid)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("looking up a chat's first segment"))?;
        Ok(segment.flatten().and_then(|s| u64::try_from(s).ok()))
    }

    pub async fn chat(&self, uid: &str) -> Result<Option<ChatState>> {
        Ok(self.lookup(&[uid]).await?.remove(uid))
    }

    /// Applies archive records in one transaction, with the statistics they produced.
    /// Idempotent: a record at or below a chat's recorded position changes nothing, so
    /// replaying the archive over a catalog that already has some of it is safe.
    pub async fn apply(&self, changes: &[AppliedChange], stats: &[IngestStat]) -> Result<()> {
        let rounds = apply_rounds(changes);
        let mut statements: Vec<Statement<'_>> = rounds
            .iter()
            .flat_map(|round| round.chunks(APPLY_CHUNK))
            .map(|chunk| self.record_versions(chunk))
            .collect();
        if let Some(max) = changes.iter().map(|c| c.seq).max() {
            statements.push(self.advance_watermark(max + 1));
        }
        if !stats.is_empty() {
            statements.push(self.add_stats(stats));
        }
        if statements.is_empty() {
            return Ok(());
        }
        // SQLite runs every statement of one string in one call to the connection's
        // thread; sent one by one, a webhook batch's apply took six hand-offs between
        // threads, a larger share of its time than SQLite's own work. The transaction's
        // BEGIN and COMMIT go in the same string, so the whole apply is one hand-off.
        if self.backend() == Backend::Sqlite {
            return self.apply_in_one_call(Statement::joined(statements)).await;
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(query_err("starting an apply"))?;
        for statement in &statements {
            statement
                .query()
                .execute(&mut *tx)
                .await
                .map_err(query_err(statement.context))?;
        }
        tx.commit().await.map_err(query_err("committing an apply"))
    }

    async fn apply_in_one_call(&self, statement: Statement<'_>) -> Result<()> {
        let transaction = Statement {
            sql: format!("BEGIN;\n{};\nCOMMIT", statement.sql),
            ..statement
        };
        let mut conn = UntilSettled {
            conn: self
                .pool
                .acquire()
                .await
                .map_err(query_err("starting an apply"))?,
            settled: false,
        };
        let outcome = transaction.query().execute(&mut *conn.conn).await;
        // A failed statement leaves the transaction open: rolled back here, or the
        // connection is closed.
        conn.settled = outcome.is_ok()
            || sqlx::query("ROLLBACK")
                .execute(&mut *conn.conn)
                .await
                .is_ok();
        outcome.map(drop).map_err(query_err(transaction.context))
    }

    /// Records one version of each chat of `chunk`, which holds each chat at most once.
    fn record_versions<'a>(&self, chunk: &'a [&'a AppliedChange]) -> Statement<'a> {
        let placeholders = self.placeholders(chunk.len() * VERSION_PARAMETERS);
        let rows: Vec<String> = placeholders
            .chunks(VERSION_PARAMETERS)
            .map(|p| {
                format!(
                    "({}, {}, 1, {}, {}, {}, {}, {}, {}, {}, {})",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO chats (chat_uid, site_key, version, content_hash, archive_seq, archive_segment, deleted, first_seen_us, updated_us, source, first_segment) \
             VALUES {} \
             ON CONFLICT (chat_uid) DO UPDATE SET \
               site_key = excluded.site_key, version = chats.version + 1, content_hash = excluded.content_hash, \
               archive_seq = excluded.archive_seq, archive_segment = excluded.archive_segment, \
               deleted = excluded.deleted, updated_us = excluded.updated_us, source = excluded.source \
             WHERE chats.archive_seq < excluded.archive_seq",
            rows.join(", ")
        );
        let values = chunk
            .iter()
            .flat_map(|c| {
                [
                    Value::Text(Cow::Borrowed(&c.chat_uid)),
                    Value::Int(c.site_key),
                    Value::Text(Cow::Owned(c.content_hash.to_hex())),
                    Value::Int(c.seq as i64),
                    Value::Int(c.segment as i64),
                    Value::Int(i64::from(c.deleted)),
                    Value::Int(c.received_at_us),
                    Value::Int(c.received_at_us),
                    Value::Text(Cow::Borrowed(&c.source)),
                    // Kept by later versions: the update below does not set it.
                    Value::Int(c.segment as i64),
                ]
            })
            .collect();
        Statement {
            sql,
            values,
            context: "recording chat versions",
        }
    }

    fn advance_watermark(&self, next_seq: u64) -> Statement<'static> {
        let p = self.placeholders(2);
        Statement {
            sql: format!(
                "UPDATE archive_watermark SET next_seq = {} WHERE id = 1 AND next_seq < {}",
                p[0], p[1]
            ),
            // Bound twice: SQLite's anonymous placeholders cannot name one value twice.
            values: vec![Value::Int(next_seq as i64), Value::Int(next_seq as i64)],
            context: "advancing the archive watermark",
        }
    }

    /// Adds `stats` to the running totals; each (source, outcome) appears at most once.
    fn add_stats<'a>(&self, stats: &'a [IngestStat]) -> Statement<'a> {
        let placeholders = self.placeholders(stats.len() * 4);
        let rows: Vec<String> = placeholders
            .chunks(4)
            .map(|p| format!("({}, {}, {}, {})", p[0], p[1], p[2], p[3]))
            .collect();
        Statement {
            sql: format!(
                "INSERT INTO ingest_stats (source, outcome, documents, bytes) VALUES {} \
                 ON CONFLICT (source, outcome) DO UPDATE SET \
                   documents = ingest_stats.documents + excluded.documents, bytes = ingest_stats.bytes + excluded.bytes",
                rows.join(", ")
            ),
            values: stats
                .iter()
                .flat_map(|s| {
                    [
                        Value::Text(Cow::Borrowed(&s.source)),
                        Value::Text(Cow::Borrowed(&s.outcome)),
                        Value::Int(s.documents),
                        Value::Int(s.bytes),
                    ]
                })
                .collect(),
            context: "updating ingest statistics",
        }
    }

    /// The first archive sequence number the catalog has not applied.
    pub async fn next_seq(&self) -> Result<u64> {
        let next: i64 = sqlx::query_scalar("SELECT next_seq FROM archive_watermark WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading the archive watermark"))?;
        Ok(u64::try_from(next).unwrap_or_default())
    }

    /// (live chats, deleted chats).
    /// Live and deleted chats, of every site or only of `sites`.
    pub async fn chat_counts(&self, sites: Option<&[i64]>) -> Result<(u64, u64)> {
        // SiteKeys are numbers, so the list is written into the SQL rather than bound one
        // placeholder at a time (the Any driver has no array binding for both back-ends).
        let filter = sites.map_or_else(String::new, |sites| {
            let list: Vec<String> = sites.iter().map(i64::to_string).collect();
            format!(
                " WHERE site_key IN ({})",
                if list.is_empty() {
                    "NULL".to_owned()
                } else {
                    list.join(",")
                }
            )
        });
        let sql = format!(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(deleted), 0) AS BIGINT) AS d FROM chats{filter}"
        );
        let row = sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("counting chats"))?;
        let total: i64 = row.try_get("n").map_err(query_err("counting chats"))?;
        let deleted: i64 = row.try_get("d").map_err(query_err("counting chats"))?;
        Ok(((total - deleted) as u64, deleted as u64))
    }

    /// Every chat state, streamed in ChatUID order, so that checks over millions of chats
    /// run in constant memory.
    pub async fn for_each_chat(&self, mut f: impl FnMut(ChatState)) -> Result<()> {
        let sql = format!("SELECT {STATE_COLUMNS} FROM chats ORDER BY chat_uid");
        let mut rows = sqlx::query(&sql).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(query_err("listing chats"))? {
            f(state_from_row(&row)?);
        }
        Ok(())
    }

    /// (ChatUID, version) of every live chat whose latest archive record came from
    /// `source`: what a source mirroring its upstream's deletions may delete.
    pub async fn live_chats_from(&self, source: &str) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        let mut rows =
            sqlx::query("SELECT chat_uid, version FROM chats WHERE source = $1 AND deleted = 0")
                .bind(source)
                .fetch(&self.pool);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(query_err("listing a source's chats"))?
        {
            out.insert(
                row.try_get("chat_uid")
                    .map_err(query_err("listing a source's chats"))?,
                row.try_get("version")
                    .map_err(query_err("listing a source's chats"))?,
            );
        }
        Ok(out)
    }

    /// The names of every source checkpoint.
    pub async fn checkpoint_names(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT source FROM source_checkpoints ORDER BY source")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing source checkpoints"))
    }

    pub async fn checkpoint(&self, source: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT position FROM source_checkpoints WHERE source = $1")
            .bind(source)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a source checkpoint"))
    }

    pub async fn set_checkpoint(&self, source: &str, position: &str, now_us: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO source_checkpoints (source, position, updated_us) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_us = excluded.updated_us",
        )
        .bind(source)
        .bind(position)
        .bind(now_us)
        .execute(&self.pool)
        .await
        .map_err(query_err("saving a source checkpoint"))?;
        Ok(())
    }

    pub async fn ingest_stats(&self) -> Result<Vec<IngestStat>> {
        let rows = sqlx::query(
            "SELECT source, outcome, documents, bytes FROM ingest_stats ORDER BY source, outcome",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading ingest statistics"))?;
        rows.iter()
            .map(|row| {
                Ok(IngestStat {
                    source: row
                        .try_get("source")
                        .map_err(query_err("reading ingest statistics"))?,
                    outcome: row
                        .try_get("outcome")
                        .map_err(query_err("reading ingest statistics"))?,
                    documents: row
                        .try_get("documents")
                        .map_err(query_err("reading ingest statistics"))?,
                    bytes: row
                        .try_get("bytes")
                        .map_err(query_err("reading ingest statistics"))?,
                })
            })
            .collect()
    }
}
