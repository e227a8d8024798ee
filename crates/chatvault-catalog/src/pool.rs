use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use std::str::FromStr;
use std::time::Duration;

use crate::{CatalogError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool over either back-end. The SQL is shared; only connection set-up
/// differs, which is why this is one type rather than one implementation per database.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Catalog {
    /// Connects and brings the schema up to date. `sqlite://PATH` creates the file if
    /// needed; `postgres://…` expects the database to exist.
    pub async fn connect(url: &str) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(CatalogError::UnsupportedUrl(url.to_owned()));
        };
        let connect_err = |source| CatalogError::Connect {
            url: redact(url),
            source,
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        // sqlx logs a slow statement with all of its SQL, tens of kilobytes on one line
        // for a batch of chat versions; the ingest writer reports slow batches itself.
        let options = AnyConnectOptions::from_str(&url)
            .map_err(connect_err)?
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(10))
            // A connection to a server can break while idle; an embedded SQLite one
            // cannot, and its check cost each batch of ingest two hand-offs between threads.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers work during writes; NORMAL sync is safe because the
                        // archive, not the catalog, is what an acknowledgement relies on:
                        // anything a power cut takes from here is replayed from the archive.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // A transaction's multi-row statements each keep a statement
                        // journal, which past 64 KiB spills to a temporary file: created,
                        // written and unlinked again by about one webhook batch in four.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        MIGRATOR.run(&pool).await?;
        Ok(Catalog { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Writes a consistent copy of an embedded catalog to `dest`, a file that must not
    /// exist yet: SQLite's `VACUUM INTO` reads one snapshot while writers go on.
    pub async fn snapshot_into(&self, dest: &std::path::Path) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Err(CatalogError::NotEmbedded(
                "a copy of the catalog is taken from an embedded (SQLite) catalog only",
            ));
        }
        let dest = dest.to_str().ok_or_else(|| {
            CatalogError::Invalid(format!("{} is not a UTF-8 path", dest.display()))
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest.to_owned())
            .execute(&self.pool)
            .await
            .map_err(crate::query_err("copying the catalog"))?;
        Ok(())
    }

    /// `count` parameter placeholders, bound in order. SQLite gets anonymous `?`: for
    /// numbered ones the driver looks each number up by name, a linear search in SQLite,
    /// which made a statement with thousands of parameters quadratic.
    pub(crate) fn placeholders(&self, count: usize) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => vec!["?".to_owned(); count],
            Backend::Postgres => (1..=count).map(|i| format!("${i}")).collect(),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Connection URLs may carry a password; errors and logs must not.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme_end], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Catalog {
    /// A pool without migrations, for administrative statements (tests create schemas).
    pub async fn connect_raw(url: &str) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|source| CatalogError::Connect {
                url: redact(url),
                source,
            })?;
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        Ok(Catalog { pool, backend })
    }

    pub async fn execute_raw(&self, sql: &str) -> Result<()> {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .map_err(crate::query_err("running an administrative statement"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, Catalog};

    /// Every pooled SQLite connection keeps its statement journals in memory (2 is
    /// `MEMORY`); with the default, an apply's journal spilled to a temporary file.
    #[tokio::test]
    async fn sqlite_connections_keep_temporary_data_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        let catalog = Catalog::connect(&url).await.expect("sqlite catalog");
        let mut held = Vec::new();
        for _ in 0..catalog.pool.options().get_max_connections() {
            let mut conn = catalog.pool.acquire().await.expect("connection");
            let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(&mut *conn)
                .await
                .expect("PRAGMA temp_store");
            assert_eq!(temp_store, 2);
            held.push(conn);
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
