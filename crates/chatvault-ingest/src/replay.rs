use chatvault_archive::{read_records, Operation, Record};
use chatvault_catalog::{AppliedChange, Catalog};
use std::path::PathBuf;

use crate::{IngestError, Result};

const REPLAY_CHUNK: usize = 2000;

/// Brings the catalog up to the archive's end: applies every record past the catalog's
/// watermark. After a crash between an archive fsync and the catalog commit, this is what
/// makes the acknowledged state whole again. Returns how many records were applied.
pub async fn catch_up_catalog(archive_dir: PathBuf, catalog: &Catalog) -> Result<u64> {
    let from = catalog.next_seq().await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<AppliedChange>>>(4);
    tokio::task::spawn_blocking(move || {
        let records = match read_records(&archive_dir, from) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let mut chunk = Vec::with_capacity(REPLAY_CHUNK);
        for record in records {
            match record {
                Ok(r) => chunk.push(change_of(r)),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            }
            if chunk.len() == REPLAY_CHUNK
                && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
            {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(chunk));
        }
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
        chat_uid: r.entry.chat_uid,
    }
}
