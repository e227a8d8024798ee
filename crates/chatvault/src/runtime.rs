//! Opening a data directory: the lock, the catalog, the archive (with crash repair), the
//! catalog catch-up, and the ingest pipeline. Shared by every command that writes.

use anyhow::{bail, Context};
use chatvault_archive::{Archive, ArchiveConfig, OpenReport};
use chatvault_catalog::Catalog;
use chatvault_compliance::Stores;
use chatvault_ingest::{catch_up_catalog, Pipeline, PipelineConfig};
use chatvault_model::SchemaRegistry;
use chatvault_store::{Store, StoreConfig};
use std::fs::File;
use std::sync::Arc;

use crate::config::Config;

pub struct Runtime {
    pub catalog: Catalog,
    pub pipeline: Pipeline,
    pub store: Store,
    pub registry: Arc<SchemaRegistry>,
    /// The three stores together, for erasure and retention.
    pub stores: Stores,
    pub open_report: OpenReport,
    pub replayed: u64,
    _lock: File,
}

/// Takes the data directory's lock, so that two writers never share one archive.
pub fn lock_data_dir(config: &Config) -> anyhow::Result<File> {
    create_data_dir(config)?;
    let path = config.data_dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another chatvault process (a running `chatvault serve` or import) is using {}; \
             stop it first, or send documents to its webhook instead",
            config.data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Connects to the catalog alone, for commands that need nothing else (keys, holds, the
/// audit log). The embedded default lives in the data directory, which a first command,
/// such as creating the key the first `serve` will need, may have to create.
pub async fn open_catalog(config: &Config) -> anyhow::Result<Catalog> {
    if config.catalog_url.is_none() {
        create_data_dir(config)?;
    }
    Ok(Catalog::connect(&config.catalog_url()).await?)
}

fn create_data_dir(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))
}

impl Runtime {
    /// For a one-off command: nothing else reads the store while it runs, so files a
    /// compaction replaces are removed at once.
    pub async fn open(config: &Config) -> anyhow::Result<Runtime> {
        Runtime::open_with(config, false).await
    }

    /// For `serve`, whose readers may still be scanning files a compaction replaces:
    /// those stay for the store's grace period.
    pub async fn open_serving(config: &Config) -> anyhow::Result<Runtime> {
        Runtime::open_with(config, true).await
    }

    async fn open_with(config: &Config, serving: bool) -> anyhow::Result<Runtime> {
        let lock = lock_data_dir(config)?;
        let catalog = Catalog::connect(&config.catalog_url()).await?;
        let archive_config = ArchiveConfig {
            segment_max_bytes: config.archive.segment_max_bytes,
            ..ArchiveConfig::new(config.archive_dir())
        };
        let (archive, open_report) =
            tokio::task::spawn_blocking(move || Archive::open(archive_config)).await??;
        let replayed = catch_up_catalog(config.archive_dir(), &catalog).await?;
        if replayed > 0 {
            tracing::info!(records = replayed, "catalog caught up with the archive");
        }
        let mut store_config = StoreConfig {
            flush_chats: config.store.flush_chats.max(1),
            flush_age: std::time::Duration::from_secs(config.store.flush_age_secs),
            replay_flush_chats: config.store.replay_flush_chats.max(1),
            rebuild_hold_bytes: config.store.rebuild_hold_mib.saturating_mul(1 << 20),
            zstd_level: config.store.zstd_level,
            ..StoreConfig::new(config.store_dir())
        };
        if !serving {
            store_config.retired_file_grace = std::time::Duration::ZERO;
        }
        let store = Store::open(store_config, catalog.clone()).await?;
        let recovered = store.recover(&config.archive_dir(), &|_| {}).await?;
        if recovered > 0 {
            tracing::info!(
                records = recovered,
                "columnar store caught up with the archive"
            );
        }
        let stores = Stores {
            archive_dir: config.archive_dir(),
            catalog: catalog.clone(),
            store: store.clone(),
            journal: crate::compliance::journal_path(config),
        };
        if let Some(receipt) = chatvault_compliance::resume_erasure(&stores).await? {
            tracing::warn!(id = %receipt.id, chats = receipt.chats, "finished an erasure a crash had interrupted");
        }
        let registry = Arc::new(
            SchemaRegistry::new(config.ingest.max_document_bytes)
                .map_err(anyhow::Error::msg)?
                .with_redaction(config.ingest.redaction_policy()?),
        );
        let pipeline = Pipeline::start(
            archive,
            catalog.clone(),
            store.clone(),
            PipelineConfig {
                max_batch_documents: config.ingest.max_batch_documents,
                max_inflight_bytes: config.ingest.max_inflight_bytes,
            },
        );
        Ok(Runtime {
            catalog,
            pipeline,
            store,
            registry,
            stores,
            open_report,
            replayed,
            _lock: lock,
        })
    }

    /// The Cosmos DB source over this runtime, when one is configured (serve runs it,
    /// `import --from-cosmos` backfills with it).
    pub fn cosmos_source(
        &self,
        config: &Config,
    ) -> anyhow::Result<Option<chatvault_ingest::CosmosSource>> {
        let Some(cosmos) = config.cosmos()? else {
            return Ok(None);
        };
        Ok(Some(chatvault_ingest::CosmosSource::new(
            cosmos,
            self.pipeline.clone(),
            self.registry.clone(),
            self.catalog.clone(),
        )?))
    }
}
