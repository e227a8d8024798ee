//! Signed digests: a statement, signed with the service's Ed25519 key, of every archive
//! segment's length and SHA-256 and of the audit log's head at one moment.
//!
//! Ed25519 rather than HMAC because the point is that a third party can check a digest
//! without being able to make one: an HMAC verifier holds the signing secret and could
//! forge digests, a public key cannot. The verifier pins the public key it received out
//! of band (`--public-key`); the key embedded in the digest is only a convenience.
//!
//! Segments only grow (a closed segment never changes; the open one is appended to), so a
//! later check compares the first `bytes` bytes of each listed segment with the digest:
//! anything added since is fine, anything changed or removed is named.

use chatvault_archive::segment_path;
use chatvault_catalog::{AuditEvent, Catalog};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{ComplianceError, Result};

pub const DIGEST_ALGORITHM: &str = "Ed25519";
const FORMAT: &str = "chatvault-digest/1";

/// The service's digest signing key (PKCS#8), kept in the data directory.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key at `path`, creating it (readable by the owner only) on first use.
    pub fn load_or_create(path: &Path) -> Result<SigningKey> {
        let bad = |reason: String| ComplianceError::BadKey {
            path: path.to_owned(),
            reason,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(path)?,
            Err(e) => return Err(ComplianceError::io(path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| bad(e.to_string()))?;
        Ok(SigningKey { pair })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }
}

/// Writes a new key under a temporary name and links it into place, so that two
/// processes starting at once end up with the same key, never two.
fn create_key_file(path: &Path) -> Result<Vec<u8>> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| ComplianceError::BadKey {
        path: path.to_owned(),
        reason: format!("cannot generate a key: {e}"),
    })?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(ComplianceError::io(parent))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(ComplianceError::io(&tmp))?;
        file.write_all(pkcs8.as_ref())
            .and_then(|()| file.sync_all())
            .map_err(ComplianceError::io(&tmp))?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(pkcs8.as_ref().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(ComplianceError::io(path))
        }
        Err(e) => Err(ComplianceError::io(path)(e)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestSegment {
    pub number: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What a digest states. Signed as its JSON serialisation (field order is fixed by the
/// type, so re-serialising a parsed digest reproduces the signed bytes exactly).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestBody {
    pub format: String,
    pub created_us: i64,
    pub records: u64,
    pub last_seq: Option<u64>,
    pub segments: Vec<DigestSegment>,
    /// SHA-256 of the newest segment as listed: the archive chain's head.
    pub archive_head_sha256: Option<String>,
    pub audit_entries: u64,
    pub audit_head_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedDigest {
    pub digest: DigestBody,
    pub algorithm: String,
    /// Hex of the raw 32-byte Ed25519 public key.
    pub public_key: String,
    /// Hex of the signature over the JSON of `digest`.
    pub signature: String,
}

fn signed_bytes(body: &DigestBody) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| ComplianceError::BadDigest(e.to_string()))
}

/// Digests the archive in `archive_dir` and the audit log, and records the export in the
/// audit log as done by `actor` (`audit_event` with action `digest.export`). Refuses when
/// the archive or the audit log does not verify: a signature must never vouch for damage.
pub async fn export_digest(
    archive_dir: &Path,
    catalog: &Catalog,
    key: &SigningKey,
    actor: AuditEvent,
) -> Result<SignedDigest> {
    let dir = archive_dir.to_owned();
    let archive = tokio::task::spawn_blocking(move || chatvault_archive::verify(&dir))
        .await
        .map_err(|e| ComplianceError::Task(e.to_string()))??;
    if let Some(torn) = &archive.torn_tail {
        // The next start cuts a torn tail off, which would make this digest look broken.
        return Err(ComplianceError::BadDigest(format!(
            "the newest segment has a torn tail from a crash ({torn}); start the service or run `chatvault verify` to repair it first"
        )));
    }
    let audit = catalog.verify_audit().await?;
    let problems: Vec<&String> = archive.problems.iter().chain(&audit.problems).collect();
    if let Some(first) = problems.first() {
        return Err(ComplianceError::BadDigest(format!(
            "refusing to sign a digest of a damaged archive or audit log ({} problems; first: {first}); run `chatvault verify`",
            problems.len()
        )));
    }
    let segments: Vec<DigestSegment> = archive
        .segments
        .iter()
        .map(|s| DigestSegment {
            number: s.number,
            bytes: s.bytes,
            sha256: s.sha256.clone(),
        })
        .collect();
    let body = DigestBody {
        format: FORMAT.to_owned(),
        created_us: crate::now_us(),
        records: archive.records,
        last_seq: archive.last_seq,
        archive_head_sha256: segments.last().map(|s| s.sha256.clone()),
        segments,
        audit_entries: audit.entries,
        audit_head_sha256: audit.head_sha256,
    };
    let signature = key.pair.sign(&signed_bytes(&body)?);
    let digest = SignedDigest {
        algorithm: DIGEST_ALGORITHM.to_owned(),
        public_key: key.public_key_hex(),
        signature: hex::encode(signature.as_ref()),
        digest: body,
    };
    let event = AuditEvent {
        action: "digest.export".to_owned(),
        target: digest
            .digest
            .archive_head_sha256
            .clone()
            .unwrap_or_default(),
        detail: serde_json::json!({
            "records": digest.digest.records,
            "segments": digest.digest.segments.len(),
            "audit_entries": digest.digest.audit_entries,
            "public_key": digest.public_key,
        }),
        ..actor
    };
    catalog.append_audit(&event).await?;
    Ok(digest)
}

/// Inside `serve`: a digest at start and then every `every`, written to `out_dir`.
/// A failed digest (a damaged archive) is logged and retried at the next interval.
pub fn spawn_periodic_digests(
    archive_dir: PathBuf,
    out_dir: PathBuf,
    catalog: Catalog,
    key: SigningKey,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A digest reads the whole archive: a restart must not redo it (competing with
        // the queries a restarted service answers) when the last one is recent.
        let first = tokio::time::Instant::now() + every.saturating_sub(newest_digest_age(&out_dir));
        let mut ticks = tokio::time::interval_at(first, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let actor = AuditEvent {
                actor: "service".to_owned(),
                address: "local".to_owned(),
                action: String::new(),
                target: String::new(),
                detail: serde_json::Value::Null,
            };
            let written = export_digest(&archive_dir, &catalog, &key, actor)
                .await
                .and_then(|d| write_digest(&out_dir, &d));
            match written {
                Ok(path) => tracing::info!(path = %path.display(), "wrote the signed digest"),
                Err(e) => tracing::error!(error = %e, "could not write the signed digest"),
            }
        }
    })
}

/// How long ago the newest digest in `dir` was written; forever when there is none.
fn newest_digest_age(dir: &Path) -> std::time::Duration {
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("digest-"))
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max();
    newest
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(std::time::Duration::MAX)
}

/// What checking a digest against the data found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DigestCheck {
    pub signature_valid: bool,
    pub segments_checked: u64,
    pub problems: Vec<String>,
}

impl DigestCheck {
    pub fn ok(&self) -> bool {
        self.signature_valid && self.problems.is_empty()
    }
}

/// Checks `digest`'s signature (against `pinned_key` when given) and that every segment
/// and audit entry it covers is still exactly as it was. `catalog` may be omitted to
/// check the archive alone (e.g. a copy of the segments only).
pub async fn check_digest(
    digest: &SignedDigest,
    pinned_key: Option<&str>,
    archive_dir: &Path,
    catalog: Option<&Catalog>,
) -> Result<DigestCheck> {
    let mut check = DigestCheck::default();
    if digest.algorithm != DIGEST_ALGORITHM || digest.digest.format != FORMAT {
        return Err(ComplianceError::BadDigest(format!(
            "unsupported digest {} / {}",
            digest.digest.format, digest.algorithm
        )));
    }
    let key_hex = pinned_key.unwrap_or(&digest.public_key);
    if key_hex != digest.public_key {
        check.problems.push(format!(
            "the digest names public key {} but {key_hex} was expected",
            digest.public_key
        ));
    }
    let key = hex::decode(key_hex)
        .map_err(|e| ComplianceError::BadDigest(format!("public key is not hex: {e}")))?;
    let signature = hex::decode(&digest.signature)
        .map_err(|e| ComplianceError::BadDigest(format!("signature is not hex: {e}")))?;
    check.signature_valid = UnparsedPublicKey::new(&ED25519, key)
        .verify(&signed_bytes(&digest.digest)?, &signature)
        .is_ok();
    if !check.signature_valid {
        check.problems.push(
            "the signature does not match: the digest was altered or signed by another key"
                .to_owned(),
        );
    }
    let dir = archive_dir.to_owned();
    let segments = digest.digest.segments.clone();
    let (checked, problems) = tokio::task::spawn_blocking(move || check_segments(&dir, &segments))
        .await
        .map_err(|e| ComplianceError::Task(e.to_string()))??;
    check.segments_checked = checked;
    check.problems.extend(problems);
    if let Some(catalog) = catalog {
        check.problems.extend(check_audit(digest, catalog).await?);
    }
    Ok(check)
}

fn check_segments(dir: &Path, segments: &[DigestSegment]) -> Result<(u64, Vec<String>)> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for s in segments {
        let path = segment_path(dir, s.number);
        let name = path.display();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{name} is missing (the digest lists it)"));
                continue;
            }
            Err(e) => return Err(ComplianceError::io(&path)(e)),
        };
        let mut prefix = Vec::new();
        file.take(s.bytes)
            .read_to_end(&mut prefix)
            .map_err(ComplianceError::io(&path))?;
        checked += 1;
        if (prefix.len() as u64) < s.bytes {
            problems.push(format!(
                "{name} is {} bytes, shorter than the {} the digest covers",
                prefix.len(),
                s.bytes
            ));
        } else if hex::encode(Sha256::digest(&prefix)) != s.sha256 {
            problems.push(format!(
                "{name} changed since the digest: its first {} bytes no longer hash to {}",
                s.bytes, s.sha256
            ));
        }
    }
    Ok((checked, problems))
}

async fn check_audit(digest: &SignedDigest, catalog: &Catalog) -> Result<Vec<String>> {
    let mut problems = catalog.verify_audit().await?.problems;
    let Some(head) = &digest.digest.audit_head_sha256 else {
        return Ok(problems);
    };
    let last = digest.digest.audit_entries.saturating_sub(1);
    let row = catalog
        .list_audit(last.checked_sub(1), None, 1)
        .await?
        .into_iter()
        .next();
    match row {
        Some(row) if row.seq == last && &row.sha256 == head => {}
        Some(row) if row.seq == last => problems.push(format!(
            "audit entry {last} changed since the digest: it hashes to {}, the digest says {head}",
            row.sha256
        )),
        _ => problems.push(format!("audit entry {last} (the digest's head) is missing")),
    }
    Ok(problems)
}

/// Writes `digest` into `dir` (created if needed) and returns its path.
pub fn write_digest(dir: &Path, digest: &SignedDigest) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(ComplianceError::io(dir))?;
    let path = dir.join(format!("digest-{}.json", digest.digest.created_us));
    let text =
        serde_json::to_vec_pretty(digest).map_err(|e| ComplianceError::BadDigest(e.to_string()))?;
    std::fs::write(&path, text).map_err(ComplianceError::io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_digest_decides_when_the_next_is_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(newest_digest_age(dir.path()), std::time::Duration::MAX);
        assert_eq!(
            newest_digest_age(&dir.path().join("missing")),
            std::time::Duration::MAX
        );
        std::fs::write(dir.path().join("digest-1.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"").expect("write");
        assert!(newest_digest_age(dir.path()) < std::time::Duration::from_secs(60));
    }

    fn body() -> DigestBody {
        DigestBody {
            format: FORMAT.to_owned(),
            created_us: 1,
            records: 2,
            last_seq: Some(1),
            segments: vec![],
            archive_head_sha256: None,
            audit_entries: 0,
            audit_head_sha256: None,
        }
    }

    #[tokio::test]
    async fn signatures_bind_the_body_and_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("digest.key");
        let key = SigningKey::load_or_create(&key_path).expect("create");
        let again = SigningKey::load_or_create(&key_path).expect("load");
        assert_eq!(key.public_key_hex(), again.public_key_hex());
        let body = body();
        let signed = SignedDigest {
            signature: hex::encode(key.pair.sign(&signed_bytes(&body).expect("json")).as_ref()),
            digest: body,
            algorithm: DIGEST_ALGORITHM.to_owned(),
            public_key: key.public_key_hex(),
        };
        let archive = dir.path().join("archive");
        let check = check_digest(&signed, None, &archive, None)
            .await
            .expect("check");
        assert!(check.ok(), "{check:?}");

        let mut altered = signed.clone();
        altered.digest.records = 3;
        let check = check_digest(&altered, None, &archive, None)
            .await
            .expect("check");
        assert!(!check.signature_valid);

        let other = SigningKey::load_or_create(&dir.path().join("other.key")).expect("other");
        let check = check_digest(&signed, Some(&other.public_key_hex()), &archive, None)
            .await
            .expect("check");
        assert!(!check.ok() && !check.signature_valid, "{check:?}");
    }
}
