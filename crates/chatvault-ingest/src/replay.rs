use chatvault_archive::{replay_chunks, Operation, Record};
use chatvault_catalog::{AppliedChange, Catalog};
use std::path::PathBuf;

use crate::{IngestError, Result};

const REPLAY_CHUNK: usize = 2000;

/// Brings the catalog up to the archive's end: applies every record past the catalog's
/// watermark. After a crash between an archive fsync and the catalog commit, this is what
/// makes the acknowledged state whole again. Returns how many records were applied.
pub async fn catch_up_catalog(archive_dir: PathBuf, catalog: &Catalog) -> Result<u64> {
    let from = catalog.next_seq().await?;
    let mut rx = replay_chunks(archive_dir, from, REPLAY_CHUNK, |r| {
        Ok::<_, IngestError>(change_of(r))
    });
    let mut applied = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        catalog
            .apply(&chunk, &[])
            .await
            .map_err(IngestError::from)?;
        applied += chunk.len() as u64;
    }
    Ok(applied)
}

fn change_of(r: Record) -> AppliedChange {
    AppliedChange {
        seq: r.seq,
        segment: r.segment,
        site_key: r.entry.site_key,
        deleted: r.entry.operation == Operation::Delete,
        content_hash: r.entry.content_hash,
        received_at_us: r.entry.received_at_us,
        source: r.entry.source.as_str().to_owned(),
        chat_uid: r.entry.chat_uid,
    }
}
