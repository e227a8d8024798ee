//! Helpers shared by the benchmark binaries.

use anyhow::Context;
use chatvault_catalog::Catalog;
use chatvault_store::{Store, StoreConfig};
use std::path::Path;

/// The columnar store of a data directory on the embedded SQLite catalog, read-only use.
pub async fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    let catalog = Catalog::connect(&format!(
        "sqlite://{}",
        data_dir.join("catalog.db").display()
    ))
    .await
    .context("opening the catalog")?;
    Store::open(StoreConfig::new(data_dir.join("store")), catalog)
        .await
        .context("opening the store")
}
