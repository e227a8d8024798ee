//! The on-disk segment format: a standard Avro object container file whose header
//! metadata also carries the segment number, its first sequence number and the SHA-256 of
//! the previous segment, which chains the segments together.

use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{put_bytes, put_long, Reader};
use crate::record::{Entry, Fields, Operation, Record, ARCHIVE_RECORD_SCHEMA};
use crate::{ArchiveError, Result};

const MAGIC: &[u8; 4] = b"Obj\x01";
const SYNC_LEN: usize = 16;
pub(crate) const ZERO_HASH: [u8; 32] = [0; 32];
const META_SEGMENT: &str = "chatvault.segment";
const META_FIRST_SEQ: &str = "chatvault.first_seq";
const META_PREV: &str = "chatvault.prev_sha256";
const META_ERASURES: &str = "chatvault.erasures";

/// Where segment `number` lives in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("segment-{number:010}.avro"))
}

/// Segment files in `dir`, ordered by number. Anything else in the folder is ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ArchiveError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ArchiveError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".avro"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((number, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub number: u64,
    pub first_seq: u64,
    pub prev_sha256: [u8; 32],
    pub sync: [u8; SYNC_LEN],
    /// Rewrites this segment has undergone, oldest first (empty for almost every segment).
    pub erasures: Vec<ErasureNote>,
}

/// One rewrite of a closed segment, recorded in its own header: it re-links the hash
/// chain, because the next segment's header still names `original_sha256`. It says what
/// happened, never what was removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErasureNote {
    pub at_us: i64,
    /// The segment's SHA-256 before this rewrite.
    pub original_sha256: String,
    /// How many records this rewrite emptied.
    pub records: u64,
    /// Why: `erasure` or `retention`.
    pub reason: String,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut meta: Vec<(&str, Vec<u8>)> = vec![
            ("avro.schema", ARCHIVE_RECORD_SCHEMA.as_bytes().to_vec()),
            ("avro.codec", b"null".to_vec()),
            (META_SEGMENT, self.number.to_string().into_bytes()),
            (META_FIRST_SEQ, self.first_seq.to_string().into_bytes()),
            (META_PREV, hex::encode(self.prev_sha256).into_bytes()),
        ];
        if !self.erasures.is_empty() {
            meta.push((
                META_ERASURES,
                serde_json::to_vec(&self.erasures).unwrap_or_default(),
            ));
        }
        put_long(&mut out, meta.len() as i64);
        for (key, value) in &meta {
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value);
        }
        put_long(&mut out, 0);
        out.extend_from_slice(&self.sync);
        out
    }

    fn decode(r: &mut Reader<'_>) -> std::result::Result<Header, String> {
        if r.take(4) != Some(MAGIC.as_slice()) {
            return Err("not an Avro object container file".into());
        }
        let (mut number, mut first_seq, mut prev) = (None, None, None);
        let mut erasures = Vec::new();
        loop {
            let mut count = r.long().ok_or("header metadata is cut short")?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = -count;
                r.long().ok_or("header metadata is cut short")?;
            }
            for _ in 0..count {
                let key = r.string().ok_or("header metadata key is cut short")?;
                let value = r.bytes().ok_or("header metadata value is cut short")?;
                let text = std::str::from_utf8(value).unwrap_or_default();
                match key {
                    "avro.codec" if value != b"null" => {
                        return Err(format!("unsupported codec {text:?}"));
                    }
                    META_SEGMENT => number = text.parse().ok(),
                    META_FIRST_SEQ => first_seq = text.parse().ok(),
                    META_PREV => {
                        let mut hash = [0u8; 32];
                        prev = hex::decode_to_slice(text, &mut hash).ok().map(|_| hash);
                    }
                    META_ERASURES => {
                        erasures = serde_json::from_slice(value)
                            .map_err(|e| format!("header erasure notes are unreadable: {e}"))?;
                    }
                    _ => {}
                }
            }
        }
        let sync = r
            .take(SYNC_LEN)
            .and_then(|s| <[u8; SYNC_LEN]>::try_from(s).ok())
            .ok_or("header sync marker is cut short")?;
        Ok(Header {
            number: number.ok_or("header lacks chatvault.segment")?,
            first_seq: first_seq.ok_or("header lacks chatvault.first_seq")?,
            prev_sha256: prev.ok_or("header lacks chatvault.prev_sha256")?,
            sync,
            erasures,
        })
    }
}

/// Appends one Avro data block holding `records` (already encoded datums).
pub(crate) fn encode_block(count: usize, data: &[u8], sync: &[u8; SYNC_LEN], out: &mut Vec<u8>) {
    put_long(out, count as i64);
    put_long(out, data.len() as i64);
    out.extend_from_slice(data);
    out.extend_from_slice(sync);
}

/// A segment read back: its header, its records (each as `T`, by default whole) and how
/// many bytes of it are whole.
pub(crate) struct ScannedSegment<T = (u64, Entry)> {
    pub header: Header,
    pub records: Vec<T>,
    /// Bytes up to the end of the last complete block; anything after is a torn tail.
    pub valid_len: usize,
    pub torn: Option<String>,
}

pub(crate) fn scan(path: &Path, bytes: &[u8]) -> Result<ScannedSegment> {
    scan_with(path, bytes, Entry::decode)
}

/// [`scan`], each record decoded by `decode`, which may borrow from `bytes`.
fn scan_with<'a, T>(
    path: &Path,
    bytes: &'a [u8],
    decode: fn(&mut Reader<'a>) -> Option<T>,
) -> Result<ScannedSegment<T>> {
    let mut r = Reader::new(bytes);
    let header = Header::decode(&mut r).map_err(|reason| ArchiveError::Corrupt {
        path: path.to_owned(),
        offset: r.pos as u64,
        reason,
    })?;
    let mut records = Vec::new();
    let mut valid_len = r.pos;
    let mut torn = None;
    while r.pos < bytes.len() {
        let block_start = r.pos;
        match scan_block(&mut r, &header, &mut records, decode) {
            Ok(()) => valid_len = r.pos,
            Err(reason) => {
                torn = Some(format!("{reason} at byte {block_start}"));
                break;
            }
        }
    }
    Ok(ScannedSegment {
        header,
        records,
        valid_len,
        torn,
    })
}

fn scan_block<'a, T>(
    r: &mut Reader<'a>,
    header: &Header,
    records: &mut Vec<T>,
    decode: fn(&mut Reader<'a>) -> Option<T>,
) -> std::result::Result<(), String> {
    let count = r.long().ok_or("block count cut short")?;
    let size = r.long().ok_or("block size cut short")?;
    let count = usize::try_from(count).map_err(|_| "negative block count")?;
    let size = usize::try_from(size).map_err(|_| "negative block size")?;
    let data = r.take(size).ok_or("block data cut short")?;
    let sync = r.take(SYNC_LEN).ok_or("block sync marker cut short")?;
    if sync != header.sync {
        return Err("block sync marker does not match the header".into());
    }
    let mut inner = Reader::new(data);
    let before = records.len();
    for _ in 0..count {
        let record = decode(&mut inner).ok_or("block holds an undecodable record")?;
        records.push(record);
    }
    if inner.pos != data.len() {
        records.truncate(before);
        return Err("block has trailing bytes after its records".into());
    }
    Ok(())
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    read_file_into(path, &mut bytes)?;
    Ok(bytes)
}

/// Reads a whole segment into `buffer`, reusing its memory: a replay reads every segment
/// in turn, and reading each into a fresh 64 MiB buffer had the kernel zero every page of
/// it first (a twelfth of a store rebuild).
fn read_file_into(path: &Path, buffer: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    buffer.clear();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(buffer))
        .map(drop)
        .map_err(ArchiveError::io(path))
}

/// Every record with `seq >= from_seq`, in order, one segment in memory at a time.
pub fn read_records(dir: &Path, from_seq: u64) -> Result<impl Iterator<Item = Result<Record>>> {
    read_records_through(dir, from_seq, u64::MAX)
}

/// As [`read_records`], reading no segment numbered above `last_segment` (a reader that
/// knows where a chat's newest record lies need not open what came after).
pub fn read_records_through(
    dir: &Path,
    from_seq: u64,
    last_segment: u64,
) -> Result<impl Iterator<Item = Result<Record>>> {
    let segments = list_segments(dir)?;
    // Skip whole segments that end before `from_seq`: a segment ends where the next begins.
    let mut start = 0;
    for (i, (_, path)) in segments.iter().enumerate().skip(1) {
        let bytes = read_header_bytes(path)?;
        let mut r = Reader::new(&bytes);
        let header = Header::decode(&mut r).map_err(|reason| ArchiveError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if header.first_seq <= from_seq {
            start = i;
        }
    }
    let first_segment = segments.get(start).map_or(0, |(number, _)| *number);
    Ok(records_of(segments, first_segment..=last_segment, from_seq))
}

/// Every record of the segments numbered within `numbers`, in order.
pub fn read_segments(
    dir: &Path,
    numbers: RangeInclusive<u64>,
) -> Result<impl Iterator<Item = Result<Record>>> {
    Ok(records_of(list_segments(dir)?, numbers, 0))
}

/// The records with `seq >= from_seq` of those `segments` numbered within `numbers`, one
/// segment in memory at a time.
fn records_of(
    segments: Vec<(u64, PathBuf)>,
    numbers: RangeInclusive<u64>,
    from_seq: u64,
) -> impl Iterator<Item = Result<Record>> {
    let mut buffer = Vec::new();
    segments
        .into_iter()
        .filter(move |(number, _)| numbers.contains(number))
        .flat_map(move |(number, path)| {
            let scanned = read_file_into(&path, &mut buffer).and_then(|()| scan(&path, &buffer));
            let records: Vec<Result<Record>> = match scanned {
                Ok(s) => s
                    .records
                    .into_iter()
                    .filter(|(seq, _)| *seq >= from_seq)
                    .map(|(seq, entry)| {
                        Ok(Record {
                            seq,
                            segment: number,
                            entry,
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            records
        })
}

/// Part of [`replay_final_versions`]: final versions in archive order, each a seq and a
/// document left where it lies in the segment read (copying every document out was a
/// twentieth of a rebuild), and how many records, final or not, the reader has passed
/// since the chunk before, for progress.
#[derive(Debug)]
pub struct FinalVersions {
    segment: Arc<Vec<u8>>,
    versions: Vec<(u64, Range<usize>)>,
    pub passed: u64,
}

impl FinalVersions {
    /// Each final version's seq and document, in archive order.
    pub fn documents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.versions.iter().map(|(seq, document)| {
            // The ranges were taken from this very segment.
            let bytes = self.segment.get(document.clone()).unwrap_or_default();
            (*seq, bytes)
        })
    }
}

/// Replays every chat's final version (its last record, unless that is a delete) on a
/// blocking thread, in chunks of up to `chunk` records: the newest segment first, each
/// segment's records in archive order. Read backwards, the first record met of a chat is
/// its final one, so one pass over the archive is enough; read forwards, every record's
/// head had to be read first to know which ones to keep. The task returns the seq after
/// the archive's last record (None if it is empty); on an error the chunks stop early
/// and the task returns the error.
pub fn replay_final_versions(
    dir: PathBuf,
    chunk: usize,
) -> (
    tokio::sync::mpsc::Receiver<FinalVersions>,
    tokio::task::JoinHandle<Result<Option<u64>>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reading = tokio::task::spawn_blocking(move || {
        let mut seen: HashSet<String, foldhash::fast::RandomState> = HashSet::default();
        let mut next_seq = None;
        // Segments read, each until no chunk holds it any more and it can be read into
        // again: a fresh buffer per segment had the kernel zero every page of it.
        let mut read: Vec<Arc<Vec<u8>>> = Vec::new();
        let mut finals: Vec<(u64, Range<usize>, usize)> = Vec::new();
        for path in list_segments(&dir)?.into_iter().rev().map(|(_, path)| path) {
            let mut buffer = read
                .iter()
                .position(|b| Arc::strong_count(b) == 1)
                .map(|i| read.swap_remove(i))
                .and_then(|b| Arc::try_unwrap(b).ok())
                .unwrap_or_default();
            read_file_into(&path, &mut buffer)?;
            let segment = Arc::new(buffer);
            let records = scan_with(&path, &segment, Fields::decode)?.records;
            if next_seq.is_none() {
                next_seq = records.last().map(|newest| newest.seq + 1);
            }
            finals.clear();
            for (i, record) in records.iter().enumerate().rev() {
                if seen.insert(record.chat_uid.to_owned()) && record.operation == Operation::Upsert
                {
                    // Where the document lies in the segment, from the slice read of it.
                    let start = record.document.as_ptr() as usize - segment.as_ptr() as usize;
                    finals.push((record.seq, start..start + record.document.len(), i));
                }
            }
            finals.reverse();
            // A segment without a final version still counts towards the progress.
            let pieces: Vec<&[(u64, Range<usize>, usize)]> = if finals.is_empty() {
                vec![&[]]
            } else {
                finals.chunks(chunk.max(1)).collect()
            };
            let mut passed = 0;
            for (k, piece) in pieces.iter().enumerate() {
                let end = match piece.last() {
                    Some((_, _, i)) if k + 1 < pieces.len() => i + 1,
                    _ => records.len(),
                };
                let part = FinalVersions {
                    segment: segment.clone(),
                    versions: piece
                        .iter()
                        .map(|(seq, document, _)| (*seq, document.clone()))
                        .collect(),
                    passed: (end - passed) as u64,
                };
                passed = end;
                if tx.blocking_send(part).is_err() {
                    // The receiver gave up, on an error of its own that it reports.
                    return Ok(next_seq);
                }
            }
            drop(records);
            read.push(segment);
        }
        Ok(next_seq)
    });
    (rx, reading)
}

/// Replays records with `seq >= from_seq` on a blocking thread, each mapped by `map`,
/// delivered in order in chunks of `chunk` so the async side can apply them in batches.
/// The first error (reading or mapping) ends the stream.
pub fn replay_chunks<T, E>(
    dir: PathBuf,
    from_seq: u64,
    chunk: usize,
    mut map: impl FnMut(Record) -> std::result::Result<T, E> + Send + 'static,
) -> tokio::sync::mpsc::Receiver<std::result::Result<Vec<T>, E>>
where
    T: Send + 'static,
    E: From<ArchiveError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let records = match read_records(&dir, from_seq) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let mut batch = Vec::with_capacity(chunk);
        for record in records {
            match record.map_err(E::from).and_then(&mut map) {
                Ok(item) => batch.push(item),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if batch.len() >= chunk && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    rx
}

fn read_header_bytes(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut buf))
        .map_err(ArchiveError::io(path))?;
    Ok(buf)
}

/// What `verify` found in one segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentSummary {
    pub number: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub records: u64,
    pub first_seq: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub segments: Vec<SegmentSummary>,
    pub records: u64,
    pub last_seq: Option<u64>,
    /// Broken chain links, corrupt blocks, gaps in sequence numbers.
    pub problems: Vec<String>,
    /// An incomplete final block in the newest segment: left by a crash mid-write, holds
    /// nothing that was acknowledged, and is cut off the next time the archive opens.
    pub torn_tail: Option<String>,
    /// Closed segments rewritten by erasure or retention, re-linked by their notes.
    pub rewritten: Vec<RewrittenSegment>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RewrittenSegment {
    pub number: u64,
    /// The segment's SHA-256 now: the newest erasure receipt must name it.
    pub sha256: String,
    pub erasures: Vec<ErasureNote>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every segment: Avro structure, sequence continuity and the hash chain.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let segments = list_segments(dir)?;
    let mut report = VerifyReport::default();
    let mut prev_hash = ZERO_HASH;
    let mut prev_name: Option<String> = None;
    let mut prev_erasures: Vec<ErasureNote> = Vec::new();
    let mut expected_seq: Option<u64> = None;
    let mut expected_number = 0;
    let last_index = segments.len().saturating_sub(1);
    for (i, (number, path)) in segments.iter().enumerate() {
        // A missing segment is reported by name; the chain link across the gap then
        // cannot hold and is not blamed on the segment before it.
        let gap = *number != expected_number;
        if gap {
            let missing = segment_path(dir, expected_number);
            report.problems.push(if *number == expected_number + 1 {
                format!("{} is missing", missing.display())
            } else {
                format!(
                    "segments {expected_number} to {} are missing, starting with {}",
                    number - 1,
                    missing.display()
                )
            });
        }
        expected_number = number + 1;
        let bytes = read_file(path)?;
        let scanned = match scan(path, &bytes) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(e.to_string());
                prev_hash = Sha256::digest(&bytes).into();
                prev_name = Some(path.display().to_string());
                prev_erasures.clear();
                continue;
            }
        };
        let name = path.display();
        if scanned.header.number != *number {
            report.problems.push(format!(
                "{name}: header says segment {}",
                scanned.header.number
            ));
        }
        let recorded = hex::encode(scanned.header.prev_sha256);
        let rewritten = prev_erasures
            .first()
            .is_some_and(|first| first.original_sha256 == recorded);
        if rewritten {
            // Re-linked by the earlier segment's own erasure notes. That the rewrite is
            // the one the audit log receipted (its new hash) is checked by the caller,
            // which holds the audit log.
            if let Some(last) = report.segments.last() {
                report.rewritten.push(RewrittenSegment {
                    number: last.number,
                    sha256: hex::encode(prev_hash),
                    erasures: std::mem::take(&mut prev_erasures),
                });
            }
        } else if scanned.header.prev_sha256 != prev_hash && !gap {
            // The later segment's header is the witness: the earlier file changed after
            // the later one was started (or the header itself was edited).
            report.problems.push(match &prev_name {
                Some(prev) => format!(
                    "{prev} was altered: it hashes to {} but {name} recorded {} when it was started",
                    hex::encode(prev_hash),
                    hex::encode(scanned.header.prev_sha256)
                ),
                None => format!(
                    "{name}: the first segment's header links to a previous segment ({})",
                    hex::encode(scanned.header.prev_sha256)
                ),
            });
        }
        if let Some(reason) = &scanned.torn {
            if i == last_index {
                report.torn_tail = Some(format!(
                    "{name}: {} bytes after a {reason}",
                    bytes.len() - scanned.valid_len
                ));
            } else {
                report.problems.push(format!("{name}: {reason} (not the newest segment, so this is damage, not a torn write)"));
            }
        }
        // Segment 0 starts at seq 0, so the first expected seq is 0 too.
        let mut next = expected_seq.unwrap_or(0);
        if gap && scanned.header.first_seq > next {
            report.problems.push(format!(
                "records seq {next} to {} are missing with it",
                scanned.header.first_seq - 1
            ));
            next = scanned.header.first_seq;
        } else if scanned.header.first_seq != next {
            report.problems.push(format!(
                "{name}: starts at seq {} but seq {next} was expected",
                scanned.header.first_seq
            ));
            next = scanned.header.first_seq;
        }
        for (seq, _) in &scanned.records {
            if *seq != next {
                report
                    .problems
                    .push(format!("{name}: seq {seq} found where {next} was expected"));
            }
            next = seq + 1;
        }
        expected_seq = Some(next);
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        report.records += scanned.records.len() as u64;
        if let Some((seq, _)) = scanned.records.last() {
            report.last_seq = Some(*seq);
        }
        report.segments.push(SegmentSummary {
            number: *number,
            path: path.clone(),
            bytes: bytes.len() as u64,
            records: scanned.records.len() as u64,
            first_seq: scanned.header.first_seq,
            sha256: hex::encode(hash),
        });
        prev_hash = hash;
        prev_name = Some(name.to_string());
        prev_erasures = scanned.header.erasures;
    }
    Ok(report)
}
