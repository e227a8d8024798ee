//! The single writer between sources and storage: batches submissions, decides each
//! document's fate against the catalog, makes the batch durable, then answers.

use chatvault_archive::{Archive, Entry, Operation, Source};
use chatvault_catalog::{AppliedChange, Catalog, IngestStat};
use chatvault_model::{flatten, ContentHash, FlatChat, Rejection, SchemaRegistry};
use chatvault_store::{Store, StoreUpdate};
use futures::future::BoxFuture;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::activity::{Activity, Refusal};
use crate::now_us;
use crate::payload::Piece;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Most documents one group commit takes; bounds latency and catalog transaction size.
    pub max_batch_documents: usize,
    /// Document bytes that may wait in the pipeline; beyond it sources are told to back off.
    pub max_inflight_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch_documents: 2048,
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A document after validation, ready for the pipeline.
#[derive(Debug)]
pub enum Prepared {
    Valid {
        location: String,
        detail: String,
        bytes: Vec<u8>,
        schema_version: u32,
        content_hash: ContentHash,
        /// The document's rows, flattened where it was validated (on the source's
        /// threads, in parallel) rather than in the single writer.
        flat: Box<FlatChat<'static>>,
    },
    Delete {
        chat_uid: String,
        detail: String,
        /// Delete only if the chat is still at this version (nothing was stored for it
        /// since the caller looked); otherwise the outcome is `Unchanged`. A source
        /// mirroring its upstream's deletions decides on a snapshot, and must not delete
        /// a version that arrived after it.
        if_version: Option<i64>,
    },
    Rejected {
        location: String,
        bytes_len: usize,
        rejection: Rejection,
    },
}

impl Prepared {
    fn bytes_len(&self) -> usize {
        match self {
            Prepared::Valid { bytes, .. } => bytes.len(),
            Prepared::Delete { .. } => 0,
            Prepared::Rejected { bytes_len, .. } => *bytes_len,
        }
    }
}

/// Validates every piece; `detail` says where they came from (client, file).
pub fn prepare(registry: &SchemaRegistry, pieces: &[Piece<'_>], detail: &str) -> Vec<Prepared> {
    pieces
        .iter()
        .map(|piece| {
            prepare_one(
                registry,
                &piece.location,
                Cow::Borrowed(piece.bytes),
                detail,
            )
        })
        .collect()
}

/// Validates one document found at `location` of the payload from `detail`. Bytes handed
/// over owned are archived as they are, not copied.
pub fn prepare_one(
    registry: &SchemaRegistry,
    location: &str,
    bytes: Cow<'_, [u8]>,
    detail: &str,
) -> Prepared {
    match registry.validate(&bytes) {
        Ok(document) => Prepared::Valid {
            location: location.to_owned(),
            detail: if location.is_empty() {
                detail.to_owned()
            } else {
                format!("{detail} {location}")
            },
            flat: Box::new(flatten(document.document, 0).into_owned()),
            schema_version: document.schema_version,
            content_hash: document.content_hash,
            // A redacted document is archived as redacted: the original never reaches disk.
            bytes: document.redacted.unwrap_or_else(|| bytes.into_owned()),
        },
        Err(rejection) => Prepared::Rejected {
            location: location.to_owned(),
            bytes_len: bytes.len(),
            rejection,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A chat the archive had not seen.
    Accepted,
    /// A new version of a known chat.
    Updated,
    /// Identical to the current version (or a delete of a deleted chat): nothing stored.
    Unchanged,
    /// A delete was recorded.
    Deleted,
    /// A delete for a chat the archive has never seen.
    NotFound,
    Rejected,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Accepted => "accepted",
            OutcomeKind::Updated => "updated",
            OutcomeKind::Unchanged => "unchanged",
            OutcomeKind::Deleted => "deleted",
            OutcomeKind::NotFound => "not_found",
            OutcomeKind::Rejected => "rejected",
        }
    }
}

/// The answer for one document, in the order the documents were submitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub location: String,
    pub status: OutcomeKind,
    #[serde(rename = "ChatUID", skip_serializing_if = "Option::is_none")]
    pub chat_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("ingest is at capacity; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    #[error("ingest is unavailable: {0}")]
    Failed(String),
    #[error("the ingest pipeline has shut down")]
    Closed,
}

struct Submission {
    source: Source,
    items: Vec<Prepared>,
    reply: oneshot::Sender<Result<Vec<Outcome>, SubmitError>>,
    _permit: OwnedSemaphorePermit,
}

/// Work that must see the archive, catalog and store with no batch in between (erasure,
/// retention); it owns its reply channel. Given `Some(reason)` it is refused, not run.
type ExclusiveJob = Box<dyn FnOnce(Option<String>) -> BoxFuture<'static, ()> + Send>;

enum Message {
    Submit(Submission),
    Exclusive(ExclusiveJob),
}

/// Handle to the pipeline task; clones share it.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Message>,
    permits: Arc<Semaphore>,
    capacity_kib: u32,
    failure: Arc<Mutex<Option<String>>>,
    activity: Activity,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("failure", &self.failure())
            .finish()
    }
}

impl Pipeline {
    pub fn start(
        archive: Archive,
        catalog: Catalog,
        store: Store,
        config: PipelineConfig,
    ) -> Pipeline {
        let capacity_kib = u32::try_from(config.max_inflight_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        let (tx, rx) = mpsc::channel(4096);
        let failure = Arc::new(Mutex::new(None));
        let activity = Activity::default();
        Worker::start(
            archive,
            catalog,
            store,
            config.max_batch_documents.max(1),
            failure.clone(),
            activity.clone(),
            rx,
        );
        Pipeline {
            tx,
            permits: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            failure,
            activity,
        }
    }

    /// What each source delivered and had refused lately.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Why the pipeline stopped accepting documents, if it did.
    pub fn failure(&self) -> Option<String> {
        failure_of(&self.failure)
    }

    fn cost(&self, items: &[Prepared]) -> u32 {
        let bytes: usize = items.iter().map(Prepared::bytes_len).sum();
        u32::try_from(bytes / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(self.capacity_kib)
    }

    /// Submits and waits for room if the pipeline is full (folder and import sources).
    pub async fn submit(
        &self,
        source: Source,
        items: Vec<Prepared>,
    ) -> Result<Vec<Outcome>, SubmitError> {
        self.enqueue(source, items).await?.wait().await
    }

    /// Queues a submission (waiting for room) without waiting for its outcome, so a bulk
    /// loader can prepare the next batch while this one commits. Submissions are committed
    /// in the order they were queued.
    pub async fn enqueue(
        &self,
        source: Source,
        items: Vec<Prepared>,
    ) -> Result<Pending, SubmitError> {
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(self.cost(&items))
            .await
            .map_err(|_| SubmitError::Closed)?;
        self.send(source, items, permit).await
    }

    /// Submits only if there is room now; otherwise `Busy` (the webhook answers 503).
    pub async fn try_submit(
        &self,
        source: Source,
        items: Vec<Prepared>,
    ) -> Result<Vec<Outcome>, SubmitError> {
        let permit = match self
            .permits
            .clone()
            .try_acquire_many_owned(self.cost(&items))
        {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                return Err(SubmitError::Busy {
                    retry_after_secs: 1,
                })
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::Closed),
        };
        self.send(source, items, permit).await?.wait().await
    }

    async fn send(
        &self,
        source: Source,
        items: Vec<Prepared>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Pending, SubmitError> {
        if let Some(reason) = self.failure() {
            return Err(SubmitError::Failed(reason));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Message::Submit(Submission {
                source,
                items,
                reply,
                _permit: permit,
            }))
            .await
            .map_err(|_| SubmitError::Closed)?;
        Ok(Pending(rx))
    }

    /// Runs `job` in the writer once every submission queued before it is durable, with
    /// the archive rolled to a fresh segment (so every record so far is in a closed
    /// segment, which a rewrite may replace) and no other batch until it finishes.
    /// Submissions arriving meanwhile wait; sources see back-pressure, not errors.
    pub async fn exclusive<T, F>(&self, job: F) -> Result<T, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce() -> BoxFuture<'static, T> + Send + 'static,
    {
        if let Some(reason) = self.failure() {
            return Err(SubmitError::Failed(reason));
        }
        let (reply, rx) = oneshot::channel();
        let job: ExclusiveJob = Box::new(move |refused| {
            Box::pin(async move {
                let result = match refused {
                    Some(reason) => Err(SubmitError::Failed(reason)),
                    None => Ok(job().await),
                };
                let _ = reply.send(result);
            })
        });
        self.tx
            .send(Message::Exclusive(job))
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.map_err(|_| SubmitError::Closed)?
    }
}

/// The outcome of a queued submission, available once its batch is durable.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Vec<Outcome>, SubmitError>>);

impl Pending {
    pub async fn wait(self) -> Result<Vec<Outcome>, SubmitError> {
        self.0.await.map_err(|_| SubmitError::Closed)?
    }
}

struct Worker {
    archive: Archive,
    catalog: Catalog,
    max_batch: usize,
    failure: Arc<Mutex<Option<String>>>,
    /// What batches already durable in the archive but not yet in the catalog decided,
    /// by ChatUID with the seq that decided it: the next batch is decided (and its
    /// archive write started) while the indexer records the previous one.
    unindexed: Arc<Mutex<HashMap<String, (u64, Known)>>>,
    indexer: mpsc::Sender<ToIndex>,
    activity: Activity,
}

/// What the pipeline believes about a chat while deciding a batch.
#[derive(Clone, Copy)]
struct Known {
    hash: ContentHash,
    deleted: bool,
    version: i64,
    site_key: i64,
}

/// A batch durable in the archive, for the indexer to record in the catalog and store.
struct Archived {
    started: Instant,
    submissions: Vec<Submission>,
    outcomes: Vec<Vec<Outcome>>,
    applied: Vec<AppliedChange>,
    stats: BTreeMap<(Source, OutcomeKind), (i64, i64)>,
    updates: Vec<StoreUpdate>,
}

enum ToIndex {
    Batch(Archived),
    /// Answered once every batch sent before it is indexed.
    Barrier(oneshot::Sender<()>),
}

fn failure_of(failure: &Mutex<Option<String>>) -> Option<String> {
    failure.lock().ok().and_then(|f| f.clone())
}

/// How often the writer lets the sources' tasks run before it closes a batch (with 16
/// webhook clients sending one document each: 2 yields made 6.4 documents a batch, 6
/// made 7.5 and 9% more documents a second).
const LINGER_YIELDS: usize = 6;

/// A catalog transaction this slow is logged as a warning (the statements themselves are
/// logged only at debug level: they are long).
const SLOW_CATALOG_SECONDS: f64 = 1.0;

/// The store's buffer may hold this many flushes' worth of chats before ingest waits
/// for a flush.
const BUFFERED_FLUSHES_AT_MOST: usize = 3;

/// Stops the pipeline: every later submission is refused with `reason`.
fn stop(failure: &Mutex<Option<String>>, reason: &str) {
    tracing::error!(%reason, "ingest pipeline stopped; restart to replay the archive");
    if let Ok(mut f) = failure.lock() {
        *f = Some(reason.to_owned());
    }
}

fn fail_all(submissions: Vec<Submission>, reason: &str) {
    for s in submissions {
        let _ = s.reply.send(Err(SubmitError::Failed(reason.to_owned())));
    }
}

impl Worker {
    fn start(
        archive: Archive,
        catalog: Catalog,
        store: Store,
        max_batch: usize,
        failure: Arc<Mutex<Option<String>>>,
        activity: Activity,
        rx: mpsc::Receiver<Message>,
    ) {
        let unindexed = Arc::new(Mutex::new(HashMap::new()));
        // One batch being indexed while the next is archived; more would only queue.
        let (indexer, to_index) = mpsc::channel(1);
        let indexer_task = Indexer {
            catalog: catalog.clone(),
            store,
            failure: failure.clone(),
            unindexed: unindexed.clone(),
        };
        tokio::spawn(indexer_task.run(to_index));
        let worker = Worker {
            archive,
            catalog,
            max_batch,
            failure,
            unindexed,
            indexer,
            activity,
        };
        tokio::spawn(worker.run(rx));
    }

    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut held: Option<Message> = None;
        while let Some(message) = match held.take() {
            Some(message) => Some(message),
            None => rx.recv().await,
        } {
            let first = match message {
                Message::Exclusive(job) => {
                    self.run_exclusive(job).await;
                    continue;
                }
                Message::Submit(first) => first,
            };
            let mut docs = first.items.len();
            let mut batch = vec![first];
            let mut lingered = 0;
            while docs < self.max_batch {
                match rx.try_recv() {
                    Ok(Message::Submit(next)) => {
                        docs += next.items.len();
                        batch.push(next);
                    }
                    // Exclusive work waits for what was queued before it, and only that.
                    Ok(exclusive) => {
                        held = Some(exclusive);
                        break;
                    }
                    // Requests that are being validated right now join this batch rather
                    // than wait for the next: letting them run first costs microseconds,
                    // a batch of its own costs a catalog round trip and an fsync.
                    Err(mpsc::error::TryRecvError::Empty) if lingered < LINGER_YIELDS => {
                        lingered += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(_) => break,
                }
            }
            if let Some(reason) = failure_of(&self.failure) {
                fail_all(batch, &reason);
                continue;
            }
            match self.archive_batch(batch).await {
                Ok(archived) => {
                    if let Err(mpsc::error::SendError(ToIndex::Batch(archived))) =
                        self.indexer.send(ToIndex::Batch(archived)).await
                    {
                        fail_all(archived.submissions, "the ingest indexer has stopped");
                    }
                }
                Err((batch, reason)) => {
                    stop(&self.failure, &reason);
                    fail_all(batch, &reason);
                }
            }
        }
    }

    /// Waits until the indexer has recorded every batch archived so far.
    async fn indexed(&self) {
        let (done, indexed) = oneshot::channel();
        if self.indexer.send(ToIndex::Barrier(done)).await.is_ok() {
            let _ = indexed.await;
        }
    }

    async fn run_exclusive(&self, job: ExclusiveJob) {
        self.indexed().await;
        let refused = match failure_of(&self.failure) {
            Some(reason) => Some(reason),
            None => self
                .archive
                .roll()
                .await
                .err()
                .map(|e| format!("cannot close the open archive segment: {e}")),
        };
        job(refused).await;
    }

    /// Decides every document's fate and makes the batch durable in the archive. On
    /// failure the submissions come back to be answered.
    async fn archive_batch(
        &self,
        mut batch: Vec<Submission>,
    ) -> Result<Archived, (Vec<Submission>, String)> {
        let started = Instant::now();
        let submissions: Vec<(Source, Vec<Prepared>)> = batch
            .iter_mut()
            .map(|s| (s.source, std::mem::take(&mut s.items)))
            .collect();
        let uids: Vec<&str> = {
            let mut uids: Vec<&str> = submissions
                .iter()
                .flat_map(|(_, items)| items)
                .filter_map(|item| match item {
                    Prepared::Valid { flat, .. } => Some(flat.chat.chat_uid.as_str()),
                    Prepared::Delete { chat_uid, .. } => Some(chat_uid.as_str()),
                    Prepared::Rejected { .. } => None,
                })
                .collect();
            uids.sort_unstable();
            uids.dedup();
            uids
        };
        // Taken before the catalog is asked: a batch the indexer finishes in between is
        // then either still here or already in the catalog, never in neither.
        let unindexed: Vec<(String, Known)> = match self.unindexed.lock() {
            Ok(u) => uids
                .iter()
                .filter_map(|uid| u.get(*uid).map(|(_, k)| ((*uid).to_owned(), *k)))
                .collect(),
            Err(_) => return Err((batch, "ingest state lock poisoned".into())),
        };
        let mut known: HashMap<String, Known> = match self.catalog.lookup(&uids).await {
            Ok(found) => found
                .into_iter()
                .map(|(uid, s)| {
                    let k = Known {
                        hash: s.content_hash,
                        deleted: s.deleted,
                        version: s.version,
                        site_key: s.site_key,
                    };
                    (uid, k)
                })
                .collect(),
            Err(e) => return Err((batch, e.to_string())),
        };
        known.extend(unindexed);

        let received_at_us = now_us();
        let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(submissions.len());
        let mut entries: Vec<Entry> = Vec::new();
        // (submission, item) each entry answers, so sequence numbers can be filled in.
        let mut slots: Vec<(usize, usize)> = Vec::new();
        // What the columnar store must mirror once the batch is durable, per entry.
        let mut mirrored: Vec<Option<Box<FlatChat<'static>>>> = Vec::new();
        let mut stats: BTreeMap<(Source, OutcomeKind), (i64, i64)> = BTreeMap::new();

        for (si, (source, items)) in submissions.into_iter().enumerate() {
            let mut answers = Vec::with_capacity(items.len());
            self.activity.received(source, received_at_us);
            for item in items {
                let bytes_len = item.bytes_len() as i64;
                let (outcome, entry, flat) = decide(item, source, received_at_us, &mut known);
                if let Some(rejection) = &outcome.error {
                    self.activity.refused(Refusal {
                        at_us: received_at_us,
                        source: source.as_str(),
                        location: outcome.location.clone(),
                        chat_uid: outcome.chat_uid.clone(),
                        reason: rejection.to_string(),
                    });
                }
                let stat = stats.entry((source, outcome.status)).or_default();
                stat.0 += 1;
                stat.1 += bytes_len;
                if let Some(entry) = entry {
                    slots.push((si, answers.len()));
                    entries.push(entry);
                    mirrored.push(flat);
                }
                answers.push(outcome);
            }
            outcomes.push(answers);
        }

        let changes: Vec<(String, i64, bool, ContentHash, Source)> = entries
            .iter()
            .map(|e| {
                (
                    e.chat_uid.clone(),
                    e.site_key,
                    e.operation == Operation::Delete,
                    e.content_hash,
                    e.source,
                )
            })
            .collect();
        let positions = match self.archive.append(entries).await {
            Ok(positions) => positions,
            Err(e) => return Err((batch, e.to_string())),
        };
        let applied: Vec<AppliedChange> = changes
            .into_iter()
            .zip(&positions)
            .map(
                |((chat_uid, site_key, deleted, content_hash, source), pos)| AppliedChange {
                    seq: pos.seq,
                    segment: pos.segment,
                    chat_uid,
                    site_key,
                    deleted,
                    content_hash,
                    received_at_us,
                    source: source.as_str().to_owned(),
                },
            )
            .collect();
        if let Ok(mut u) = self.unindexed.lock() {
            for change in &applied {
                if let Some(k) = known.get(&change.chat_uid) {
                    u.insert(change.chat_uid.clone(), (change.seq, *k));
                }
            }
        }
        let mut updates = Vec::with_capacity(applied.len());
        for (((si, ii), pos), (change, flat)) in slots
            .into_iter()
            .zip(positions)
            .zip(applied.iter().zip(mirrored))
        {
            let outcome = &mut outcomes[si][ii];
            outcome.seq = Some(pos.seq);
            updates.push(match flat {
                Some(flat) => StoreUpdate::Upsert {
                    seq: pos.seq,
                    flat,
                    supersedes: outcome.status == OutcomeKind::Updated,
                },
                None => StoreUpdate::Delete {
                    seq: pos.seq,
                    chat_uid: change.chat_uid.clone(),
                },
            });
        }
        Ok(Archived {
            started,
            submissions: batch,
            outcomes,
            applied,
            stats,
            updates,
        })
    }
}

/// The second stage of the writer: records archived batches in the catalog and the
/// store, in archive order, then answers their senders.
struct Indexer {
    catalog: Catalog,
    store: Store,
    failure: Arc<Mutex<Option<String>>>,
    unindexed: Arc<Mutex<HashMap<String, (u64, Known)>>>,
}

impl Indexer {
    async fn run(self, mut rx: mpsc::Receiver<ToIndex>) {
        while let Some(message) = rx.recv().await {
            let batch = match message {
                ToIndex::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
                ToIndex::Batch(batch) => batch,
            };
            if let Some(reason) = failure_of(&self.failure) {
                fail_all(batch.submissions, &reason);
                continue;
            }
            let Archived {
                started,
                submissions,
                outcomes,
                applied,
                stats,
                updates,
            } = batch;
            if let Err(reason) = self.index(&applied, &stats, updates).await {
                stop(&self.failure, &reason);
                fail_all(submissions, &reason);
                continue;
            }
            metrics::histogram!("chatvault_ingest_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            for (s, o) in submissions.into_iter().zip(outcomes) {
                let _ = s.reply.send(Ok(o));
            }
        }
    }

    async fn index(
        &self,
        applied: &[AppliedChange],
        stats: &BTreeMap<(Source, OutcomeKind), (i64, i64)>,
        updates: Vec<StoreUpdate>,
    ) -> Result<(), String> {
        let stat_rows: Vec<IngestStat> = stats
            .iter()
            .map(|((source, kind), (documents, bytes))| IngestStat {
                source: source.as_str().to_owned(),
                outcome: kind.as_str().to_owned(),
                documents: *documents,
                bytes: *bytes,
            })
            .collect();
        self.apply_with_retry(applied, &stat_rows).await?;
        if let Some(last) = applied.last() {
            if let Ok(mut u) = self.unindexed.lock() {
                u.retain(|_, (seq, _)| *seq > last.seq);
            }
        }
        // The archive and catalog are the record; the store is rebuilt from them after
        // any failure, so a failure here is logged, not reported to the sender.
        if let Err(e) = self.store.apply(updates) {
            tracing::error!(error = %e, "columnar store could not mirror a batch; it will catch up on restart");
        }
        // The background flusher has fallen behind: write the buffer before taking more,
        // so that a fast source slows down rather than memory growing without bound.
        if self.store.buffered_chats() >= self.store.config().flush_chats * BUFFERED_FLUSHES_AT_MOST
        {
            if let Err(e) = self.store.flush().await {
                tracing::error!(error = %e, "columnar store flush failed; will retry");
            }
        }
        for ((source, kind), (documents, _)) in stats {
            metrics::counter!("chatvault_ingest_documents_total", "source" => source.as_str(), "outcome" => kind.as_str())
                .increment(*documents as u64);
        }
        Ok(())
    }

    /// The batch is already durable in the archive; a transient catalog error must not
    /// turn that into a failure the client retries (which would duplicate versions).
    async fn apply_with_retry(
        &self,
        applied: &[AppliedChange],
        stats: &[IngestStat],
    ) -> Result<(), String> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=4 {
            let started = Instant::now();
            match self.catalog.apply(applied, stats).await {
                Ok(()) => {
                    let seconds = started.elapsed().as_secs_f64();
                    if seconds >= SLOW_CATALOG_SECONDS {
                        tracing::warn!(
                            versions = applied.len(),
                            seconds,
                            "the catalog took long to record a batch"
                        );
                    }
                    return Ok(());
                }
                Err(e) if attempt < 4 => {
                    tracing::warn!(error = %e, attempt, "catalog update failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => {
                    return Err(format!(
                        "the catalog could not record an archived batch: {e}"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The fate of one item given what is known so far in this batch; updates `known` so a
/// chat sent twice in one batch behaves exactly as if sent in two.
fn decide(
    item: Prepared,
    source: Source,
    received_at_us: i64,
    known: &mut HashMap<String, Known>,
) -> (Outcome, Option<Entry>, Option<Box<FlatChat<'static>>>) {
    match item {
        Prepared::Rejected {
            location,
            rejection,
            ..
        } => (
            Outcome {
                location,
                status: OutcomeKind::Rejected,
                chat_uid: rejection.chat_uid.clone(),
                version: None,
                seq: None,
                error: Some(rejection),
            },
            None,
            None,
        ),
        Prepared::Valid {
            location,
            detail,
            bytes,
            schema_version,
            content_hash,
            flat,
        } => {
            let chat_uid = &flat.chat.chat_uid;
            let site_key = i64::from(flat.chat.site_key);
            let previous = known.get(chat_uid).copied();
            let outcome = |status, version| Outcome {
                location,
                status,
                chat_uid: Some(chat_uid.clone()),
                version: Some(version),
                seq: None,
                error: None,
            };
            match previous {
                Some(p) if !p.deleted && p.hash == content_hash => {
                    (outcome(OutcomeKind::Unchanged, p.version), None, None)
                }
                _ => {
                    let version = previous.map_or(1, |p| p.version + 1);
                    let status = if previous.is_some() {
                        OutcomeKind::Updated
                    } else {
                        OutcomeKind::Accepted
                    };
                    known.insert(
                        chat_uid.clone(),
                        Known {
                            hash: content_hash,
                            deleted: false,
                            version,
                            site_key,
                        },
                    );
                    let entry = Entry {
                        received_at_us,
                        source,
                        source_detail: detail,
                        chat_uid: chat_uid.clone(),
                        site_key,
                        operation: Operation::Upsert,
                        schema_version: schema_version as i32,
                        content_hash,
                        document: bytes,
                    };
                    let outcome = outcome(status, version);
                    (outcome, Some(entry), Some(flat))
                }
            }
        }
        Prepared::Delete {
            chat_uid,
            detail,
            if_version,
        } => {
            let previous = known.get(&chat_uid).copied();
            let outcome = |status, version| Outcome {
                location: String::new(),
                status,
                chat_uid: Some(chat_uid.clone()),
                version,
                seq: None,
                error: None,
            };
            match previous {
                None => (outcome(OutcomeKind::NotFound, None), None, None),
                Some(p) if p.deleted || if_version.is_some_and(|v| v != p.version) => {
                    (outcome(OutcomeKind::Unchanged, Some(p.version)), None, None)
                }
                Some(p) => {
                    let version = p.version + 1;
                    known.insert(
                        chat_uid.clone(),
                        Known {
                            deleted: true,
                            version,
                            ..p
                        },
                    );
                    let entry = Entry {
                        received_at_us,
                        source,
                        source_detail: detail,
                        chat_uid: chat_uid.clone(),
                        site_key: p.site_key,
                        operation: Operation::Delete,
                        schema_version: 0,
                        content_hash: ContentHash::ZERO,
                        document: Vec::new(),
                    };
                    (
                        outcome(OutcomeKind::Deleted, Some(version)),
                        Some(entry),
                        None,
                    )
                }
            }
        }
    }
}
