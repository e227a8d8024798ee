//! `chatvault verify`: the archive is intact, and the catalog and the columnar store hold
//! exactly what it says. Every problem names the segment, record or chat at fault.

use chatvault_archive::{read_records, Operation, VerifyReport};
use chatvault_catalog::Catalog;
use chatvault_model::{content_hash, ContentHash};
use chatvault_store::Store;
use std::collections::HashMap;
use std::path::PathBuf;

use crate::{ComplianceError, Result};

/// What the archive says the catalog must hold for one chat.
struct Expected {
    seq: u64,
    segment: u64,
    hash: ContentHash,
    deleted: bool,
    versions: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub archive: VerifyReport,
    pub chats: u64,
    pub deleted_chats: u64,
    /// Archive problems first, then records, then catalog and store disagreements.
    pub problems: Vec<String>,
}

impl VerifyOutcome {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the whole archive in `archive_dir` against `catalog` and `store`.
pub async fn verify_all(
    archive_dir: PathBuf,
    catalog: &Catalog,
    store: &Store,
) -> Result<VerifyOutcome> {
    let (archive, expected, mut problems) = tokio::task::spawn_blocking(move || {
        let report = chatvault_archive::verify(&archive_dir)?;
        let (expected, problems) = replay_expectations(&archive_dir)?;
        Ok::<_, ComplianceError>((report, expected, problems))
    })
    .await
    .map_err(|e| ComplianceError::Task(e.to_string()))??;
    let mut problems_first = archive.problems.clone();
    problems_first.extend(rewrite_problems(&archive, catalog).await?);
    problems_first.append(&mut problems);
    let mut problems = problems_first;

    let mut matched = 0usize;
    catalog
        .for_each_chat(|state| {
            let Some(e) = expected.get(&state.chat_uid) else {
                problems.push(format!(
                    "catalog row for chat {} points at archive seq {} in segment {}, which the archive does not hold",
                    state.chat_uid, state.archive_seq, state.archive_segment
                ));
                return;
            };
            matched += 1;
            let mut diffs = Vec::new();
            let mut differ = |field: &str, catalog: String, archive: String| {
                if catalog != archive {
                    diffs.push(format!("{field} {catalog} (archive: {archive})"));
                }
            };
            differ("seq", state.archive_seq.to_string(), e.seq.to_string());
            differ(
                "segment",
                state.archive_segment.to_string(),
                e.segment.to_string(),
            );
            differ("version", state.version.to_string(), e.versions.to_string());
            differ("content_hash", state.content_hash.to_hex(), e.hash.to_hex());
            differ("deleted", state.deleted.to_string(), e.deleted.to_string());
            if !diffs.is_empty() {
                problems.push(format!(
                    "catalog row for chat {} disagrees with the archive: {}",
                    state.chat_uid,
                    diffs.join(", ")
                ));
            }
        })
        .await?;
    if matched < expected.len() {
        // Rare (only when something is wrong), so a second pass is cheaper than keeping
        // every catalog ChatUID in memory on the common path.
        let known = catalog
            .lookup(&expected.keys().map(String::as_str).collect::<Vec<_>>())
            .await?;
        let mut missing: Vec<&String> = expected
            .keys()
            .filter(|uid| !known.contains_key(*uid))
            .collect();
        missing.sort();
        for uid in missing {
            let e = &expected[uid];
            problems.push(format!(
                "chat {uid} (archive seq {}, segment {}) is missing from the catalog",
                e.seq, e.segment
            ));
        }
    }

    problems.extend(store_problems(catalog, store).await?);
    let watermark = catalog.next_seq().await?;
    let archive_end = archive.last_seq.map_or(0, |s| s + 1);
    if watermark != archive_end {
        problems.push(format!(
            "catalog has applied the archive up to seq {watermark}, but the archive ends at {archive_end}"
        ));
    }
    let (chats, deleted_chats) = catalog.chat_counts(None).await?;
    Ok(VerifyOutcome {
        archive,
        chats,
        deleted_chats,
        problems,
    })
}

/// A rewritten segment's notes re-link the chain; the audit log's `archive.rewrite`
/// receipt (hash-chained, covered by digests) must name the hash the file has now, or the
/// file changed after its last sanctioned rewrite.
async fn rewrite_problems(archive: &VerifyReport, catalog: &Catalog) -> Result<Vec<String>> {
    if archive.rewritten.is_empty() {
        return Ok(Vec::new());
    }
    let receipts = catalog
        .list_audit(None, Some("archive.rewrite"), u32::MAX)
        .await?;
    let mut problems = Vec::new();
    for segment in &archive.rewritten {
        let receipted = receipts.iter().any(|r| {
            r.detail["segment"].as_u64() == Some(segment.number)
                && r.detail["new_sha256"].as_str() == Some(segment.sha256.as_str())
        });
        if !receipted {
            problems.push(format!(
                "segment {} was changed after its last erasure rewrite: no audit receipt names its SHA-256 {}",
                segment.number, segment.sha256
            ));
        }
    }
    Ok(problems)
}

/// Replays the archive into the state the catalog must hold, re-hashing every document
/// so that a changed byte inside a record is named even where no later segment's chain
/// link vouches for it yet (the newest segment).
fn replay_expectations(
    archive_dir: &std::path::Path,
) -> Result<(HashMap<String, Expected>, Vec<String>)> {
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut problems = Vec::new();
    for record in read_records(archive_dir, 0)? {
        let record = record?;
        let deleting = record.entry.operation == Operation::Delete;
        if !deleting {
            let actual =
                serde_json::from_slice(&record.entry.document).map(|doc| content_hash(&doc));
            if actual.as_ref().ok() != Some(&record.entry.content_hash) {
                problems.push(format!(
                    "segment {} record seq {} (chat {}): the document does not match its recorded content hash{}",
                    record.segment,
                    record.seq,
                    record.entry.chat_uid,
                    actual.err().map(|e| format!(" (it is no longer JSON: {e})")).unwrap_or_default()
                ));
            }
        }
        let e = expected
            .entry(record.entry.chat_uid.clone())
            .or_insert(Expected {
                seq: 0,
                segment: 0,
                hash: ContentHash::ZERO,
                deleted: true,
                versions: 0,
            });
        if e.versions > 0 && !deleting && !e.deleted && e.hash == record.entry.content_hash {
            problems.push(format!(
                "chat {} is stored twice with the same content (seq {} and {})",
                record.entry.chat_uid, e.seq, record.seq
            ));
        }
        e.seq = record.seq;
        e.segment = record.segment;
        e.hash = record.entry.content_hash;
        e.deleted = deleting;
        e.versions += 1;
    }
    Ok((expected, problems))
}

/// The store must hold exactly the catalog's current version of every live chat.
async fn store_problems(catalog: &Catalog, store: &Store) -> Result<Vec<String>> {
    let stored = store.current_versions()?;
    let mut live_in_catalog = 0usize;
    let mut problems = Vec::new();
    catalog
        .for_each_chat(|state| {
            if state.deleted {
                if stored.contains_key(&state.chat_uid) {
                    problems.push(format!("store still shows deleted chat {}", state.chat_uid));
                }
                return;
            }
            live_in_catalog += 1;
            match stored.get(&state.chat_uid).map(Vec::as_slice) {
                Some([seq]) if u64::try_from(*seq).ok() == Some(state.archive_seq) => {}
                Some(seqs) => problems.push(format!(
                    "store holds chat {} at seqs {seqs:?}, catalog says {}",
                    state.chat_uid, state.archive_seq
                )),
                None => problems.push(format!("store lacks chat {}", state.chat_uid)),
            }
        })
        .await?;
    if stored.len() != live_in_catalog {
        problems.push(format!(
            "store holds {} chats, the catalog {live_in_catalog} live ones",
            stored.len()
        ));
    }
    Ok(problems)
}
