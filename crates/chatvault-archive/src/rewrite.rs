//! Erasure rewrites: the one sanctioned way bytes of a closed segment change.
//!
//! An erased record keeps its place (seq), ChatUID, SiteKey, time, schema version and the
//! content hash of the original document — so the chain of sequence numbers stays whole
//! and anyone who still holds the original can prove it was what was erased — but its
//! document and source detail (which may hold a client address) are emptied and it
//! becomes a delete, so every replay (catalog, store rebuild) treats the chat as gone.
//!
//! Anonymisation rewrites the same way, but a record keeps its operation and gets the
//! masked document and that document's content hash ([`rewrite_segment`]).
//!
//! The rewrite is crash-safe: the new file is written beside the old one, fsynced, renamed
//! over it and the directory fsynced, so after a crash the segment is wholly the old or
//! wholly the new file. The new header carries an [`ErasureNote`] naming the old file's
//! SHA-256, which is what the next segment's header recorded: that re-links the chain.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use crate::record::{Entry, Operation};
use crate::segment::{encode_block, list_segments, scan, segment_path, ErasureNote};
use crate::writer::write_synced;
use crate::{ArchiveError, Result};

/// Records per block in a rewritten segment: keeps each block far below the reader's
/// block-size limit whatever the documents' sizes.
const REWRITE_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// What one rewrite did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentRewrite {
    pub segment: u64,
    pub original_sha256: String,
    pub new_sha256: String,
    /// Records emptied (erasure) or masked (anonymisation) by this rewrite.
    pub records: u64,
}

/// True when the record still holds anything erasure must remove.
fn holds_content(entry: &Entry) -> bool {
    !entry.document.is_empty() || !entry.source_detail.is_empty()
}

/// Empties `entry` if it belongs to one of `chat_uids` and still holds content, making it
/// a delete; true when it did.
pub fn erase_entry(entry: &mut Entry, chat_uids: &BTreeSet<String>) -> bool {
    let erase = chat_uids.contains(&entry.chat_uid) && holds_content(entry);
    if erase {
        entry.document = Vec::new();
        entry.source_detail = String::new();
        entry.operation = Operation::Delete;
    }
    erase
}

/// Empties every record of `chat_uids` in closed segment `number`. Returns `None` when
/// none of them holds content any more (so running an erasure again is harmless).
/// `before_rename` runs with the result once the new file is durable under its temporary
/// name and before it replaces the segment: the caller records its receipt there, so a
/// receipt always exists for a rewrite that happened.
pub fn erase_in_segment<E: From<ArchiveError>>(
    dir: &Path,
    number: u64,
    chat_uids: &BTreeSet<String>,
    at_us: i64,
    reason: &str,
    before_rename: impl FnOnce(&SegmentRewrite) -> std::result::Result<(), E>,
) -> std::result::Result<Option<SegmentRewrite>, E> {
    rewrite_segment(
        dir,
        number,
        |entry| erase_entry(entry, chat_uids),
        at_us,
        reason,
        before_rename,
    )
}

/// Rewrites closed segment `number`, passing every record through `change` (which edits
/// it in place and says whether it did); erasure and anonymisation differ only there.
/// Returns `None`, writing nothing, when no record changed. Same crash safety, note and
/// `before_rename` contract as [`erase_in_segment`].
pub fn rewrite_segment<E: From<ArchiveError>>(
    dir: &Path,
    number: u64,
    mut change: impl FnMut(&mut Entry) -> bool,
    at_us: i64,
    reason: &str,
    before_rename: impl FnOnce(&SegmentRewrite) -> std::result::Result<(), E>,
) -> std::result::Result<Option<SegmentRewrite>, E> {
    let path = segment_path(dir, number);
    let bytes = std::fs::read(&path).map_err(ArchiveError::io(&path))?;
    let scanned = scan(&path, &bytes)?;
    if let Some(torn) = &scanned.torn {
        return Err(ArchiveError::Corrupt {
            path,
            offset: scanned.valid_len as u64,
            reason: format!("refusing to rewrite a damaged segment: {torn}"),
        }
        .into());
    }
    let mut erased = 0u64;
    let records: Vec<(u64, Entry)> = scanned
        .records
        .into_iter()
        .map(|(seq, mut entry)| {
            if change(&mut entry) {
                erased += 1;
            }
            (seq, entry)
        })
        .collect();
    if erased == 0 {
        return Ok(None);
    }
    let original_sha256 = hex::encode(Sha256::digest(&bytes));
    let mut header = scanned.header;
    header.erasures.push(ErasureNote {
        at_us,
        original_sha256: original_sha256.clone(),
        records: erased,
        reason: reason.to_owned(),
    });
    let mut out = header.encode();
    let mut data = Vec::new();
    let mut count = 0;
    for (seq, entry) in &records {
        entry.encode(*seq, &mut data);
        count += 1;
        if data.len() >= REWRITE_BLOCK_BYTES {
            encode_block(count, &data, &header.sync, &mut out);
            data.clear();
            count = 0;
        }
    }
    if count > 0 {
        encode_block(count, &data, &header.sync, &mut out);
    }
    let rewrite = SegmentRewrite {
        segment: number,
        original_sha256,
        new_sha256: hex::encode(Sha256::digest(&out)),
        records: erased,
    };
    let tmp = path.with_extension("avro.rewrite");
    drop(write_synced(&tmp, &out)?);
    before_rename(&rewrite)?;
    std::fs::rename(&tmp, &path).map_err(ArchiveError::io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ArchiveError::io(dir))?;
    Ok(Some(rewrite))
}

/// Segments holding a record of any of `chat_uids` with content left; erasure rewrites
/// these. Only closed segments can be rewritten (the writer appends to the newest), so a
/// match in the newest is an error: open the archive afresh first, which starts a new one.
pub fn segments_holding(dir: &Path, chat_uids: &BTreeSet<String>) -> Result<Vec<u64>> {
    segments_where(dir, |e| chat_uids.contains(&e.chat_uid) && holds_content(e))
}

/// Segments holding a record `wanted` picks; as [`segments_holding`], a match in the
/// newest (open) segment is an error.
pub fn segments_where(dir: &Path, wanted: impl Fn(&Entry) -> bool) -> Result<Vec<u64>> {
    let segments = list_segments(dir)?;
    let mut out = Vec::new();
    for (i, (number, path)) in segments.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(ArchiveError::io(path))?;
        let scanned = scan(path, &bytes)?;
        if scanned.records.iter().any(|(_, e)| wanted(e)) {
            if i + 1 == segments.len() {
                return Err(ArchiveError::OpenSegment(path.clone()));
            }
            out.push(*number);
        }
    }
    Ok(out)
}
