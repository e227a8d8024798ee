//! The single writer: one thread owns the open segment, takes every append waiting in its
//! queue, writes them as one Avro block and makes them durable with one `fsync`.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

use crate::record::Entry;
use crate::segment::{self, encode_block, list_segments, scan, segment_path, Header, ZERO_HASH};
use crate::{ArchiveError, Result};

#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_max_bytes: u64,
    /// Upper bound on the bytes one group commit writes, so one block stays readable.
    pub max_block_bytes: usize,
}

impl ArchiveConfig {
    pub fn new(dir: impl Into<PathBuf>) -> ArchiveConfig {
        ArchiveConfig {
            dir: dir.into(),
            segment_max_bytes: 64 * 1024 * 1024,
            max_block_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What opening found: useful in logs after a crash.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub next_seq: u64,
    /// Bytes cut off the newest segment because its final block was incomplete.
    pub truncated_bytes: u64,
}

#[derive(Debug, Default)]
pub struct ArchiveStats {
    pub fsyncs: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub next_seq: AtomicU64,
    pub segments_started: AtomicU64,
}

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub segment: u64,
}

type AppendReply = oneshot::Sender<Result<Vec<Position>>>;

enum Request {
    Append {
        entries: Vec<Entry>,
        reply: AppendReply,
    },
    /// Close the open segment (if it holds records) so that everything appended so far
    /// is in closed segments; answers with the number of the segment now open.
    Roll { reply: oneshot::Sender<Result<u64>> },
}

/// Handle to the archive; cheap to clone, all clones feed the same writer thread.
#[derive(Clone)]
pub struct Archive {
    tx: mpsc::Sender<Request>,
    stats: Arc<ArchiveStats>,
    dir: PathBuf,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("dir", &self.dir).finish()
    }
}

impl Archive {
    /// Opens (or creates) the archive in `config.dir`: repairs a torn tail in the newest
    /// segment, then starts a fresh segment chained to it, so that no byte a previous
    /// process wrote is ever appended to again.
    pub fn open(config: ArchiveConfig) -> Result<(Archive, OpenReport)> {
        std::fs::create_dir_all(&config.dir).map_err(ArchiveError::io(&config.dir))?;
        let segments = list_segments(&config.dir)?;
        let mut report = OpenReport {
            segments: segments.len(),
            ..OpenReport::default()
        };
        let (next_number, next_seq, prev_hash) = match segments.last() {
            None => (0, 0, ZERO_HASH),
            Some((number, path)) => {
                let bytes = segment::read_file(path)?;
                let scanned = scan(path, &bytes)?;
                let mut valid = &bytes[..];
                if let Some(reason) = &scanned.torn {
                    report.truncated_bytes = (bytes.len() - scanned.valid_len) as u64;
                    tracing::warn!(segment = %path.display(), %reason, bytes = report.truncated_bytes,
                        "cutting off an incomplete final block left by a crash");
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(ArchiveError::io(path))?;
                    file.set_len(scanned.valid_len as u64)
                        .map_err(ArchiveError::io(path))?;
                    file.sync_all().map_err(ArchiveError::io(path))?;
                    valid = &bytes[..scanned.valid_len];
                }
                let next_seq = scanned
                    .records
                    .last()
                    .map_or(scanned.header.first_seq, |(seq, _)| seq + 1);
                (number + 1, next_seq, Sha256::digest(valid).into())
            }
        };
        report.next_seq = next_seq;
        let stats = Arc::new(ArchiveStats::default());
        stats.next_seq.store(next_seq, Ordering::Relaxed);
        let open = OpenSegment::create(&config.dir, next_number, next_seq, prev_hash)?;
        stats.segments_started.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            config: config.clone(),
            segment: open,
            next_seq,
            stats: stats.clone(),
            poisoned: None,
            records: Vec::new(),
            block: Vec::new(),
        };
        std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(ArchiveError::io(&config.dir))?;
        Ok((
            Archive {
                tx,
                stats,
                dir: config.dir,
            },
            report,
        ))
    }

    /// Appends `entries` in order and returns where each landed, once they are on stable
    /// storage. Appends issued concurrently are written and synced together.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<Vec<Position>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Append { entries, reply })
            .map_err(|_| ArchiveError::Closed)?;
        rx.await.map_err(|_| ArchiveError::Closed)?
    }

    /// Closes the open segment after every append queued before this call, so that all
    /// of them are in closed segments (which only a rewrite may change) while new appends
    /// go to a fresh one. An open segment without records is kept. Returns the number of
    /// the segment open afterwards.
    pub async fn roll(&self) -> Result<u64> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Roll { reply })
            .map_err(|_| ArchiveError::Closed)?;
        rx.await.map_err(|_| ArchiveError::Closed)?
    }

    pub fn stats(&self) -> &ArchiveStats {
        &self.stats
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct OpenSegment {
    path: PathBuf,
    file: File,
    header: Header,
    len: u64,
    hasher: Sha256,
}

impl OpenSegment {
    fn create(
        dir: &Path,
        number: u64,
        first_seq: u64,
        prev_sha256: [u8; 32],
    ) -> Result<OpenSegment> {
        let path = segment_path(dir, number);
        // The sync marker only has to be unlikely to occur in data; deriving it from the
        // chain keeps the file reproducible from its inputs.
        let seed = Sha256::new()
            .chain_update(b"chatvault-sync")
            .chain_update(number.to_le_bytes())
            .chain_update(prev_sha256)
            .finalize();
        let mut sync = [0u8; 16];
        sync.copy_from_slice(&seed[..16]);
        let header = Header {
            number,
            first_seq,
            prev_sha256,
            sync,
            erasures: Vec::new(),
        };
        let bytes = header.encode();
        // Written under a temporary name and renamed into place, so a crash can leave a
        // stray temporary file but never a segment with half a header.
        let tmp = path.with_extension("avro.tmp");
        let file = write_synced(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).map_err(ArchiveError::io(&path))?;
        // The new directory entry must survive a crash too, or the chain would lose a link.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(ArchiveError::io(dir))?;
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        Ok(OpenSegment {
            path,
            file,
            header,
            len: bytes.len() as u64,
            hasher,
        })
    }
}

/// Creates (or truncates) `path`, writes `bytes` and syncs them; the file stays open for
/// callers that go on appending.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(ArchiveError::io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(ArchiveError::io(path))?;
    Ok(file)
}

struct Writer {
    config: ArchiveConfig,
    segment: OpenSegment,
    next_seq: u64,
    stats: Arc<ArchiveStats>,
    poisoned: Option<String>,
    /// Encoding buffers kept between commits: a batch is megabytes, and fresh buffers
    /// of that size are fresh pages the kernel zeroes on every commit.
    records: Vec<u8>,
    block: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut held: Option<Request> = None;
        while let Some(first) = held.take().or_else(|| rx.recv().ok()) {
            let (entries, reply) = match first {
                Request::Roll { reply } => {
                    let _ = reply.send(self.roll());
                    continue;
                }
                Request::Append { entries, reply } => (entries, reply),
            };
            let mut bytes: usize = entries.iter().map(|e| e.document.len()).sum();
            let mut batch = vec![(entries, reply)];
            while bytes < self.config.max_block_bytes {
                match rx.try_recv() {
                    Ok(Request::Append { entries, reply }) => {
                        bytes += entries.iter().map(|e| e.document.len()).sum::<usize>();
                        batch.push((entries, reply));
                    }
                    // A roll is a barrier: what was queued before it is committed first.
                    Ok(roll) => {
                        held = Some(roll);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let result = match &self.poisoned {
                Some(reason) => Err(ArchiveError::Poisoned(reason.clone())),
                None => self.commit(&batch),
            };
            match result {
                Ok(seqs) => {
                    let mut seqs = seqs.into_iter();
                    for (entries, reply) in batch {
                        let mine: Vec<Position> = seqs.by_ref().take(entries.len()).collect();
                        let _ = reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    if self.poisoned.is_none() {
                        tracing::error!(error = %e, "archive write failed; refusing further writes");
                        self.poisoned = Some(e.to_string());
                    }
                    let reason = self.poisoned.clone().unwrap_or_default();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(ArchiveError::Poisoned(reason.clone())));
                    }
                }
            }
        }
    }

    fn roll(&mut self) -> Result<u64> {
        if let Some(reason) = &self.poisoned {
            return Err(ArchiveError::Poisoned(reason.clone()));
        }
        if self.next_seq > self.segment.header.first_seq {
            self.rotate()?;
        }
        Ok(self.segment.header.number)
    }

    fn commit(&mut self, batch: &[(Vec<Entry>, AppendReply)]) -> Result<Vec<Position>> {
        let count: usize = batch.iter().map(|(entries, _)| entries.len()).sum();
        if self.segment.len >= self.config.segment_max_bytes {
            self.rotate()?;
        }
        let first_seq = self.next_seq;
        let data = &mut self.records;
        data.clear();
        for (i, entry) in batch.iter().flat_map(|(entries, _)| entries).enumerate() {
            entry.encode(first_seq + i as u64, data);
        }
        let block = &mut self.block;
        block.clear();
        encode_block(count, data, &self.segment.header.sync, block);
        let written = block.len() as u64;
        let path = &self.segment.path;
        self.segment
            .file
            .write_all(block)
            .map_err(ArchiveError::io(path))?;
        self.segment
            .file
            .sync_data()
            .map_err(ArchiveError::io(path))?;
        self.segment.hasher.update(block);
        self.segment.len += written;
        self.next_seq += count as u64;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(count as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(written, Ordering::Relaxed);
        self.stats.next_seq.store(self.next_seq, Ordering::Relaxed);
        let segment = self.segment.header.number;
        Ok((first_seq..self.next_seq)
            .map(|seq| Position { seq, segment })
            .collect())
    }

    fn rotate(&mut self) -> Result<()> {
        let prev: [u8; 32] = self.segment.hasher.clone().finalize().into();
        let next = OpenSegment::create(
            &self.config.dir,
            self.segment.header.number + 1,
            self.next_seq,
            prev,
        )?;
        tracing::info!(closed = %self.segment.path.display(), sha256 = %hex::encode(prev), "archive segment closed");
        self.segment = next;
        self.stats.segments_started.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
