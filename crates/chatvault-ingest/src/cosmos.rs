//! The Azure Cosmos DB source: the chat server's archive container is read once in full,
//! then polled for documents written since the checkpoint.
//!
//! Why `_ts` queries and not the change feed: the checkpoint must live in the catalog as a
//! plain, inspectable position that survives SDK upgrades (the SDK is a beta whose
//! continuation-token format may change), and `_ts` works on every server including the
//! emulator the tests use. Cosmos `_ts` has one-second resolution, so several documents
//! share a value; the source therefore never resumes *after* a second, only *at* it
//! (`_ts >= since`), and re-reads an overlap window before the checkpoint to catch writes
//! that became visible late. Re-read documents are harmless: the pipeline recognises an
//! identical document by its content hash (Cosmos system properties excluded) and stores
//! nothing, and this source skips documents whose `_etag` it already submitted.
//!
//! Queries never rely on the server's continuation tokens to be stable while the
//! container changes: each step is a fresh `SELECT TOP n … WHERE c._ts >= @since
//! ORDER BY c._ts`, and the last second of a full page is always re-read by the next step.
//!
//! Documents deleted from the container stay in the archive by default: the archive
//! outlives the chat server's retention. With `mirror_deletes` the source reconciles
//! instead, because a `_ts` query cannot see deletions: every `reconcile_interval` it
//! takes the catalog's live chats whose latest version it stored itself, lists the
//! ChatUIDs present in the container (a paged projection), and deletes the chats that
//! vanished, each only if it is still at the version seen (the rules are at `reconcile`).

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, MaxItemCountHint, QueryOptions, Region,
    ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosRuntime, FeedScope, Query,
    RoutingStrategy,
};
use chatvault_catalog::Catalog;
use chatvault_model::SchemaRegistry;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::payload::Piece;
use crate::pipeline::{prepare, Outcome, OutcomeKind, Pipeline, Prepared, SubmitError};
use crate::{now_us, IngestError, OutcomeTally, Result, Source};

/// The environment variable rustls reads trust anchors from. The Cosmos SDK offers no
/// other way to add a certificate authority, so `ca_file` is honoured through it (see
/// [`CosmosConfig::ca_file`]).
pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";

/// A backfill gives up after this many consecutive transient failures.
const BACKFILL_ATTEMPTS: u32 = 8;
/// The page of one step grows up to this while a single `_ts` second fills it.
const MAX_STEP_DOCUMENTS: u32 = 1 << 20;
/// Every Cosmos checkpoint name starts with this (see [`CosmosConfig::checkpoint_name`]).
pub const CHECKPOINT_PREFIX: &str = "cosmos:";
/// Mirrored deletes submitted together.
const DELETE_CHUNK: usize = 1000;

#[derive(Clone)]
pub struct CosmosConfig {
    /// Account endpoint, e.g. `https://myaccount.documents.azure.com:443/`.
    pub endpoint: String,
    /// Account key (primary or secondary, read-only keys suffice). Never logged.
    pub key: String,
    pub database: String,
    pub container: String,
    /// Accept a self-signed or otherwise invalid server certificate. Only for the
    /// emulator: refused unless the endpoint is a loopback address (or the host named
    /// in `AZURE_COSMOS_EMULATOR_HOST`), because the SDK relaxes validation only there.
    pub accept_invalid_certs: bool,
    /// Trust the certificate authorities in this PEM file instead of the system store.
    /// The SDK's TLS stack reads trust anchors only from the system store or from the
    /// `SSL_CERT_FILE` environment variable, so the process must be started with (or
    /// set, before any thread starts) `SSL_CERT_FILE` naming this same file; the source
    /// refuses to start otherwise rather than silently trusting something else.
    pub ca_file: Option<PathBuf>,
    /// Pause between polls once the source has caught up.
    pub poll_interval: Duration,
    /// Seconds before the checkpoint that every poll reads again, for writes that
    /// became visible after later ones (replication, clock skew between partitions).
    pub overlap_secs: u64,
    /// Documents read and committed together.
    pub page_size: u32,
    /// Longest wait between retries after a failure (backoff doubles up to it).
    pub max_backoff: Duration,
    /// Preferred Azure region (e.g. `westeurope`) for routing; `None` lets the SDK choose.
    pub region: Option<String>,
    /// Delete from the archive the chats whose documents were deleted from the container
    /// (off by default: the archive outlives the chat server's retention).
    pub mirror_deletes: bool,
    /// Pause between two reconciles of the container's ChatUIDs with the archive, when
    /// deletes are mirrored. Each lists the whole container (ChatUIDs only).
    pub reconcile_interval: Duration,
}

impl std::fmt::Debug for CosmosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosConfig")
            .field("endpoint", &self.endpoint)
            .field("key", &"<redacted>")
            .field("database", &self.database)
            .field("container", &self.container)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("ca_file", &self.ca_file)
            .field("poll_interval", &self.poll_interval)
            .field("overlap_secs", &self.overlap_secs)
            .field("page_size", &self.page_size)
            .field("max_backoff", &self.max_backoff)
            .field("region", &self.region)
            .field("mirror_deletes", &self.mirror_deletes)
            .field("reconcile_interval", &self.reconcile_interval)
            .finish()
    }
}

impl CosmosConfig {
    /// A configuration with production defaults: strict certificate validation, a poll
    /// every second once caught up, a 60 s overlap window, pages of 1000 documents, container deletes not
    /// mirrored (a reconcile every 10 minutes once they are).
    pub fn new(
        endpoint: impl Into<String>,
        key: impl Into<String>,
        database: impl Into<String>,
        container: impl Into<String>,
    ) -> CosmosConfig {
        CosmosConfig {
            endpoint: endpoint.into(),
            key: key.into(),
            database: database.into(),
            container: container.into(),
            accept_invalid_certs: false,
            ca_file: None,
            poll_interval: Duration::from_secs(1),
            overlap_secs: 60,
            page_size: 1000,
            max_backoff: Duration::from_secs(60),
            region: None,
            mirror_deletes: false,
            reconcile_interval: Duration::from_secs(600),
        }
    }

    /// Reads an account key from a file (surrounding whitespace ignored). The error
    /// names the file, never its content.
    pub fn read_key_file(path: &Path) -> Result<String> {
        let raw = std::fs::read_to_string(path).map_err(|source| IngestError::Io {
            path: path.to_owned(),
            source,
        })?;
        let key = raw.trim();
        if key.is_empty() {
            return Err(IngestError::Cosmos(format!(
                "the Cosmos DB key file {} is empty",
                path.display()
            )));
        }
        Ok(key.to_owned())
    }

    /// The source's name in the catalog's checkpoint table.
    pub fn checkpoint_name(&self) -> String {
        format!("{CHECKPOINT_PREFIX}{}/{}", self.database, self.container)
    }

    fn label(&self) -> String {
        format!("cosmos {}/{}", self.database, self.container)
    }

    fn check(&self) -> std::result::Result<AccountEndpoint, Failure> {
        let config = |m: String| Failure::Config(m);
        if self.key.trim().is_empty() {
            return Err(config("no Cosmos DB account key is configured".into()));
        }
        if self.database.is_empty() || self.container.is_empty() {
            return Err(config(
                "the Cosmos DB database and container must be named".into(),
            ));
        }
        let endpoint: AccountEndpoint = self.endpoint.parse().map_err(|e| {
            config(format!(
                "the Cosmos DB endpoint {:?} is not a URL: {e}",
                self.endpoint
            ))
        })?;
        let host = endpoint.url().host_str().unwrap_or_default().to_owned();
        if self.accept_invalid_certs && !is_emulator_host(&host) {
            return Err(config(format!(
                "accepting invalid certificates is only possible for an emulator on this machine \
                 (localhost, 127.0.0.1, [::1] or AZURE_COSMOS_EMULATOR_HOST), not for {host}; \
                 use a CA file instead"
            )));
        }
        if let Some(ca) = &self.ca_file {
            std::fs::metadata(ca)
                .map_err(|e| config(format!("the CA file {} cannot be read: {e}", ca.display())))?;
            let env = std::env::var_os(CA_FILE_ENV).map(PathBuf::from);
            if env.as_deref() != Some(ca.as_path()) {
                return Err(config(format!(
                    "a CA file for Cosmos DB ({}) needs {CA_FILE_ENV} set to the same path in the \
                     environment before start: the Cosmos SDK reads extra trust anchors only from there",
                    ca.display()
                )));
            }
        }
        Ok(endpoint)
    }
}

/// The same test the SDK applies before it relaxes certificate validation.
fn is_emulator_host(host: &str) -> bool {
    if let Ok(custom) = std::env::var("AZURE_COSMOS_EMULATOR_HOST") {
        if !custom.is_empty() && host.eq_ignore_ascii_case(&custom) {
            return true;
        }
    }
    ["localhost", "127.0.0.1", "[::1]", "::1"]
        .iter()
        .any(|h| host.eq_ignore_ascii_case(h))
}

/// What a backfill did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BackfillSummary {
    /// Documents read from the container and submitted.
    pub documents: u64,
    /// Rejections are kept as `id=… _ts=…: reason`.
    #[serde(flatten)]
    pub outcomes: OutcomeTally,
    /// The checkpoint (`_ts`) saved at the end, if the container held any document.
    pub checkpoint: Option<i64>,
}

/// Why a step failed, which decides how long to wait and what to tell the operator.
#[derive(Debug)]
enum Failure {
    /// Wrong settings: nothing changes until an operator acts.
    Config(String),
    /// The key was refused (401/403).
    Auth(String),
    /// The database or container does not exist (deleted or renamed).
    NotFound(String),
    /// 429 after the SDK's own retries; wait at least this long.
    Throttled(String, Option<Duration>),
    /// Network trouble, timeouts, 5xx: retry soon.
    Transient(String),
    /// The archive or catalog cannot take documents: the source must stop.
    Pipeline(IngestError),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::Config(m)
            | Failure::Auth(m)
            | Failure::NotFound(m)
            | Failure::Throttled(m, _)
            | Failure::Transient(m) => m.clone(),
            Failure::Pipeline(e) => e.to_string(),
        }
    }

    fn into_error(self) -> IngestError {
        match self {
            Failure::Pipeline(e) => e,
            other => IngestError::Cosmos(other.message()),
        }
    }
}

/// Classifies an SDK error. Messages name the account and container, never the key.
fn classify(config: &CosmosConfig, doing: &str, e: &azure_data_cosmos::CosmosError) -> Failure {
    let status = e.status();
    let code = u16::from(status.status_code());
    let place = format!(
        "{} (database {:?}, container {:?})",
        config.endpoint, config.database, config.container
    );
    // The SDK's one-line rendering carries status and message; the alternate form adds
    // the cause chain, where transport and TLS problems are described, followed by a
    // long diagnostics block that does not belong in a status line.
    let detail = format!("{e:#}")
        .lines()
        .take_while(|l| !l.trim_start().starts_with("Diagnostics"))
        .filter(|l| !l.trim().is_empty())
        .take(6)
        .collect::<Vec<_>>()
        .join(" | ");
    match code {
        401 => Failure::Auth(format!(
            "Cosmos DB refused the account key while {doing} at {place}: HTTP 401; \
             check the configured key (CHATVAULT_COSMOS_KEY or the key file)"
        )),
        403 => Failure::Auth(format!(
            "Cosmos DB refused access while {doing} at {place}: HTTP 403; check the \
             configured key and the account's firewall: {detail}"
        )),
        404 => Failure::NotFound(format!(
            "Cosmos DB database or container not found while {doing} at {place} (deleted or renamed?): {e}"
        )),
        429 => {
            let wait = e
                .response()
                .and_then(|r| r.headers().retry_after_ms)
                .map(Duration::from_millis);
            Failure::Throttled(
                format!("Cosmos DB is throttling requests (429) while {doing} at {place}"),
                wait,
            )
        }
        400 => Failure::Config(format!(
            "Cosmos DB rejected the request while {doing} at {place}: {detail}"
        )),
        _ => {
            let lower = detail.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("invalidcertificate") {
                Failure::Transient(format!(
                    "the TLS certificate of {} is not trusted while {doing}: {detail}; \
                     configure a CA file, or for the local emulator only accept invalid certificates",
                    config.endpoint
                ))
            } else {
                Failure::Transient(format!("Cosmos DB unreachable or failing while {doing} at {place}: {detail}"))
            }
        }
    }
}

/// The Cosmos system properties this source reads; everything else is the chat document.
#[derive(Deserialize)]
struct SystemProperties {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "_ts")]
    ts: Option<i64>,
    #[serde(default, rename = "_rid")]
    rid: Option<String>,
    #[serde(default, rename = "_etag")]
    etag: Option<String>,
}

/// One document as read.
struct Item {
    raw: Box<RawValue>,
    id: String,
    ts: i64,
    /// `_rid` and `_etag`: the same pair means the same stored version.
    version: Option<(String, String)>,
}

fn item_of(raw: Box<RawValue>) -> Item {
    // A document that is not an object still goes to the pipeline, which rejects it
    // with a reason; it sorts as `_ts` 0 so it never holds the checkpoint back.
    let props: SystemProperties = serde_json::from_str(raw.get()).unwrap_or(SystemProperties {
        id: None,
        ts: None,
        rid: None,
        etag: None,
    });
    let version = match (props.rid, props.etag) {
        (Some(r), Some(e)) => Some((r, e)),
        _ => None,
    };
    Item {
        raw,
        id: props.id.unwrap_or_default(),
        ts: props.ts.unwrap_or_default(),
        version,
    }
}

/// Where a pass stands: the checkpoint and the versions already submitted in the
/// overlap window.
#[derive(Default)]
struct Cursor {
    /// Every document with `_ts` at or below this is durable.
    checkpoint: Option<i64>,
    /// `_rid` → (`_etag`, `_ts`) of versions submitted by this process.
    submitted: HashMap<String, (String, i64)>,
    /// Every document with `_ts` below this was read by a pass of this process that
    /// started after they had all become visible, so no pass needs to read them again.
    /// Without it a quiet container would have its last `overlap_secs` of writes read
    /// again by every poll until the next write. Not persisted: after a restart the
    /// overlap window is read once, since the stopped process may have missed a write
    /// that became visible late.
    settled: i64,
}

impl Cursor {
    fn already_submitted(&self, item: &Item) -> bool {
        match &item.version {
            Some((rid, etag)) => self
                .submitted
                .get(rid)
                .is_some_and(|(seen, _)| seen == etag),
            None => false,
        }
    }

    /// Forgets versions that fall before every future query.
    fn prune(&mut self, before_ts: i64) {
        self.submitted.retain(|_, (_, ts)| *ts >= before_ts);
    }
}

/// Counters of one pass, for the status line and the backfill summary.
#[derive(Default)]
struct Tally {
    summary: BackfillSummary,
}

impl Tally {
    fn record(&mut self, outcomes: &[Outcome], locations: &[String]) {
        for (o, location) in outcomes.iter().zip(locations) {
            self.summary.documents += 1;
            self.summary.outcomes.record(o, location);
        }
    }
}

/// What one reconcile of the container with the archive found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reconciled {
    /// Live chats whose latest version this source stored: the only ones it may delete.
    checked: u64,
    /// ChatUIDs found in the container (documents without one are not counted).
    listed: u64,
    /// Chats deleted because their documents were no longer in the container.
    deleted: u64,
    /// Vanished chats left alone because a new version arrived while the container was
    /// being listed (from any source).
    kept: u64,
}

/// When the next reconcile is due and what the last one did, for the status line.
struct Mirror {
    due: tokio::time::Instant,
    backoff: Duration,
    /// The last status suffix: the last complete reconcile, or why the last one failed.
    note: String,
    deleted_since_start: u64,
}

impl Mirror {
    fn new() -> Mirror {
        Mirror {
            due: tokio::time::Instant::now(),
            backoff: Duration::ZERO,
            note: String::new(),
            deleted_since_start: 0,
        }
    }

    fn done(&mut self, r: Reconciled, interval: Duration) {
        self.deleted_since_start += r.deleted;
        self.backoff = Duration::ZERO;
        self.due = tokio::time::Instant::now() + interval;
        self.note = format!(
            "; deletes mirrored: last reconcile listed {} chats in the container, checked {}, \
             deleted {} ({} since start), kept {} changed meanwhile",
            r.listed, r.checked, r.deleted, self.deleted_since_start, r.kept
        );
        metrics::counter!("chatvault_cosmos_reconciles_total", "result" => "complete").increment(1);
        metrics::counter!("chatvault_cosmos_mirrored_deletes_total").increment(r.deleted);
        metrics::gauge!("chatvault_cosmos_reconcile_listed_chats").set(r.listed as f64);
    }

    /// A failed reconcile deleted nothing; it is tried again after a backoff.
    fn failed(&mut self, failure: &Failure, interval: Duration, max_backoff: Duration) {
        self.backoff = next_backoff(self.backoff, max_backoff);
        // A refusal on principle (checkpoints of another container) does not go away by
        // itself: asking again at the usual interval is enough.
        let wait = match failure {
            Failure::Config(_) => interval,
            _ => self.backoff.min(interval),
        };
        self.due = tokio::time::Instant::now() + wait;
        self.note = format!(
            "; deletes mirrored: the last reconcile failed and deleted nothing ({}); retrying in {} s",
            failure.message(),
            wait.as_secs_f32().ceil()
        );
        metrics::counter!("chatvault_cosmos_reconciles_total", "result" => "failed").increment(1);
    }
}

/// One row of the reconcile's listing.
#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    uid: Option<String>,
}

pub struct CosmosSource {
    config: CosmosConfig,
    pipeline: Pipeline,
    registry: Arc<SchemaRegistry>,
    catalog: Catalog,
    container: tokio::sync::Mutex<Option<ContainerClient>>,
}

impl std::fmt::Debug for CosmosSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosSource")
            .field("config", &self.config)
            .finish()
    }
}

impl CosmosSource {
    /// Checks the configuration; no connection is made until the source runs.
    pub fn new(
        config: CosmosConfig,
        pipeline: Pipeline,
        registry: Arc<SchemaRegistry>,
        catalog: Catalog,
    ) -> Result<CosmosSource> {
        config.check().map_err(Failure::into_error)?;
        Ok(CosmosSource {
            config,
            pipeline,
            registry,
            catalog,
            container: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &CosmosConfig {
        &self.config
    }

    /// Runs until `shutdown` turns true: reads every document past the checkpoint (all
    /// of them the first time), then polls. Failures are retried with bounded
    /// exponential backoff and reported through `status(ready, message)`; only a
    /// pipeline that can no longer store documents ends the source with an error.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        status: impl Fn(bool, String) + Send + Sync + 'static,
    ) -> Result<()> {
        let label = self.config.label();
        let mut cursor = Cursor {
            checkpoint: self.load_checkpoint().await,
            ..Cursor::default()
        };
        tracing::info!(source = %label, endpoint = %self.config.endpoint, checkpoint = ?cursor.checkpoint, "Cosmos DB source starting");
        status(false, format!("{label}: starting"));
        let mut backoff = Duration::ZERO;
        let mut last_message = String::new();
        let mut session = Tally::default();
        let mut caught_up = false;
        let mut mirror = Mirror::new();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            // Until the first pass completes the source is catching up (possibly reading
            // the whole container); later passes report only their outcome, so readiness
            // does not flicker on every poll that finds new documents.
            let catching_up = |n: u64| {
                if !caught_up {
                    status(false, format!("{label}: catching up, {n} documents read"));
                }
            };
            let pass = tokio::select! {
                r = self.pass(&mut cursor, &mut session, &catching_up) => r,
                _ = shutdown.changed() => return Ok(()),
            };
            // Reconciling only once caught up keeps a first, long backfill from waiting
            // behind a listing of the whole container.
            let pass = match pass {
                Ok(())
                    if self.config.mirror_deletes && tokio::time::Instant::now() >= mirror.due =>
                {
                    let reconciled = tokio::select! {
                        r = self.reconcile() => r,
                        _ = shutdown.changed() => return Ok(()),
                    };
                    match reconciled {
                        Ok(r) => {
                            tracing::info!(source = %label, checked = r.checked, listed = r.listed, deleted = r.deleted, kept = r.kept, "Cosmos DB deletes reconciled");
                            mirror.done(r, self.config.reconcile_interval);
                            Ok(())
                        }
                        Err(Failure::Pipeline(e)) => Err(Failure::Pipeline(e)),
                        Err(failure) => {
                            tracing::warn!(source = %label, error = %failure.message(), "Cosmos DB reconcile failed; nothing was deleted");
                            mirror.failed(
                                &failure,
                                self.config.reconcile_interval,
                                self.config.max_backoff,
                            );
                            Ok(())
                        }
                    }
                }
                other => other,
            };
            let wait = match pass {
                Ok(()) => {
                    caught_up = true;
                    backoff = Duration::ZERO;
                    let rejected = session.summary.outcomes.count(OutcomeKind::Rejected);
                    let message = format!(
                        "{label}: up to date (checkpoint _ts={}, {} documents read since start, {rejected} rejected{})",
                        cursor
                            .checkpoint
                            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
                        session.summary.documents,
                        mirror.note,
                    );
                    if message != last_message {
                        status(true, message.clone());
                        last_message = message;
                    }
                    self.config.poll_interval
                }
                Err(Failure::Pipeline(e)) => {
                    status(
                        false,
                        format!("{label}: stopped, the archive cannot take documents: {e}"),
                    );
                    return Err(e);
                }
                Err(failure) => {
                    backoff = next_backoff(backoff, self.config.max_backoff);
                    let wait = match &failure {
                        Failure::Throttled(_, Some(after)) => (*after)
                            .max(Duration::from_millis(100))
                            .min(self.config.max_backoff),
                        _ => backoff,
                    };
                    if matches!(failure, Failure::NotFound(_) | Failure::Auth(_)) {
                        // The next attempt connects afresh: a re-created container has a
                        // new identity, and a rotated key needs a new client.
                        *self.container.lock().await = None;
                    }
                    let message = format!(
                        "{label}: {}; retrying in {} s",
                        failure.message(),
                        wait.as_secs_f32().ceil()
                    );
                    tracing::warn!(source = %label, error = %failure.message(), retry_in_ms = wait.as_millis() as u64, "Cosmos DB source waiting");
                    status(false, message.clone());
                    last_message = message;
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Reads the whole container once (whatever the checkpoint says) and stores every
    /// document, calling `progress` with the number of documents stored so far. Ends
    /// with an error for a wrong key, a missing container or repeated failures.
    /// Advances the checkpoint, so a source started afterwards does not read it all again.
    pub async fn backfill(
        &self,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<BackfillSummary> {
        let mut cursor = Cursor::default();
        let mut tally = Tally::default();
        let mut attempts = 0;
        let mut backoff = Duration::ZERO;
        loop {
            match self.pass(&mut cursor, &mut tally, progress).await {
                Ok(()) => break,
                Err(failure @ (Failure::Throttled(..) | Failure::Transient(_)))
                    if attempts + 1 < BACKFILL_ATTEMPTS =>
                {
                    attempts += 1;
                    backoff = next_backoff(backoff, self.config.max_backoff);
                    let wait = match &failure {
                        Failure::Throttled(_, Some(after)) => (*after).min(self.config.max_backoff),
                        _ => backoff,
                    };
                    tracing::warn!(error = %failure.message(), attempt = attempts, "Cosmos DB backfill retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(failure) => return Err(failure.into_error()),
            }
        }
        tally.summary.checkpoint = cursor.checkpoint;
        Ok(tally.summary)
    }

    /// Deletes the chats whose documents are no longer in the container; run by
    /// [`CosmosSource::run`] every `reconcile_interval` when `mirror_deletes` is set.
    ///
    /// The rules, in the order they apply:
    /// - Only chats whose *latest* archive record came from Cosmos are candidates. A chat
    ///   re-sent (changed) through the webhook, a folder or an import after Cosmos stored
    ///   it belongs to that source from then on and is never deleted here; an identical
    ///   re-send stores nothing and changes nothing. Chats already deleted are skipped.
    /// - The candidates are read from the catalog *before* the container is listed, so a
    ///   document written during the listing is never mistaken for a vanished one.
    /// - The listing must be complete: any failed page ends the reconcile with an error
    ///   before a single delete is submitted.
    /// - Each delete names the version the candidate had; the pipeline, the single
    ///   writer, drops it if anything was stored for the chat since (counted as kept).
    /// - When the catalog holds checkpoints of another Cosmos container, chats cannot be
    ///   told apart by container, so nothing is deleted and the reconcile fails with why.
    async fn reconcile(&self) -> std::result::Result<Reconciled, Failure> {
        let catalog_failure = |e: chatvault_catalog::CatalogError| {
            Failure::Transient(format!("reading the catalog: {e}"))
        };
        let own = self.config.checkpoint_name();
        let others: Vec<String> = self
            .catalog
            .checkpoint_names()
            .await
            .map_err(catalog_failure)?
            .into_iter()
            .filter(|n| n.starts_with(CHECKPOINT_PREFIX) && *n != own)
            .collect();
        if !others.is_empty() {
            return Err(Failure::Config(format!(
                "this archive also holds chats read from other Cosmos DB containers ({}), which \
                 cannot be told apart from this one's; deletes are not mirrored",
                others.join(", ")
            )));
        }
        let mut candidates = self
            .catalog
            .live_chats_from(Source::Cosmos.as_str())
            .await
            .map_err(catalog_failure)?;
        let mut result = Reconciled {
            checked: candidates.len() as u64,
            ..Reconciled::default()
        };
        let container = self.container().await?;
        result.listed = self
            .list_chat_uids(&container, |uid| {
                candidates.remove(&uid.to_ascii_lowercase());
            })
            .await?;
        let mut vanished: Vec<(String, i64)> = candidates.into_iter().collect();
        vanished.sort_unstable();
        let detail = format!("{}: no longer in the container", self.config.label());
        for chunk in vanished.chunks(DELETE_CHUNK) {
            let items = chunk
                .iter()
                .map(|(uid, version)| Prepared::Delete {
                    chat_uid: uid.clone(),
                    detail: detail.clone(),
                    if_version: Some(*version),
                })
                .collect();
            for outcome in self.submit(items).await? {
                match outcome.status {
                    OutcomeKind::Deleted => result.deleted += 1,
                    _ => result.kept += 1,
                }
            }
        }
        Ok(result)
    }

    /// Lists every ChatUID in the container, in pages ordered by ChatUID that each resume
    /// after the last one seen, so documents written or deleted meanwhile cannot make a
    /// page skip an unrelated chat (no continuation token is relied on). Returns how
    /// many were listed.
    async fn list_chat_uids(
        &self,
        container: &ContainerClient,
        mut seen: impl FnMut(&str),
    ) -> std::result::Result<u64, Failure> {
        let config = &self.config;
        let page = config.page_size.clamp(1, MAX_STEP_DOCUMENTS);
        let mut after = String::new();
        let mut listed = 0u64;
        loop {
            let doing = "listing the container's ChatUIDs";
            // TOP takes a literal here: `page` is this source's own number, not input.
            let query = Query::from(format!(
                "SELECT TOP {page} c.ChatHeader.ChatUID AS uid FROM c \
                 WHERE c.ChatHeader.ChatUID > @after ORDER BY c.ChatHeader.ChatUID"
            ))
            .with_parameter("@after", after.as_str())
            .map_err(|e| Failure::Config(format!("building the Cosmos DB query: {e}")))?;
            let options = QueryOptions::default().with_max_item_count(
                NonZeroU32::new(page)
                    .map_or(MaxItemCountHint::ServerDecides, MaxItemCountHint::Limit),
            );
            let mut pages = container
                .query_items::<Listed>(query, FeedScope::full_container(), Some(options))
                .await
                .map_err(|e| classify(config, doing, &e))?
                .into_pages();
            let mut rows = 0u32;
            let mut last: Option<String> = None;
            while let Some(result) = pages.next().await {
                for row in result
                    .map_err(|e| classify(config, doing, &e))?
                    .into_items()
                {
                    rows += 1;
                    if let Some(uid) = row.uid {
                        seen(&uid);
                        listed += 1;
                        last = Some(uid);
                    }
                }
            }
            if rows < page {
                return Ok(listed);
            }
            match last {
                Some(uid) if uid > after => after = uid,
                // A full page that does not move forward would loop for ever; the listing
                // is incomplete, so it must not be used.
                _ => {
                    return Err(Failure::Transient(format!(
                    "{doing}: the container answered a page that does not advance past {after:?}"
                )))
                }
            }
        }
    }

    /// Submits to the pipeline, waiting until durable.
    async fn submit(&self, items: Vec<Prepared>) -> std::result::Result<Vec<Outcome>, Failure> {
        match self.pipeline.submit(Source::Cosmos, items).await {
            Ok(o) => Ok(o),
            Err(SubmitError::Busy { retry_after_secs }) => Err(Failure::Throttled(
                "the ingest pipeline is busy".into(),
                Some(Duration::from_secs(retry_after_secs)),
            )),
            Err(e) => Err(Failure::Pipeline(IngestError::Submit(e))),
        }
    }

    async fn load_checkpoint(&self) -> Option<i64> {
        let name = self.config.checkpoint_name();
        match self.catalog.checkpoint(&name).await {
            Ok(Some(position)) => match position.trim().parse::<i64>() {
                Ok(ts) => Some(ts),
                Err(_) => {
                    // Reading everything again is safe (identical documents are not
                    // stored twice); guessing a position is not.
                    tracing::warn!(source = %name, %position, "unreadable Cosmos DB checkpoint; reading the whole container");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "cannot read the Cosmos DB checkpoint; reading the whole container");
                None
            }
        }
    }

    /// The checkpoint only moves forward: a backfill and a running source may share it.
    async fn save_checkpoint(&self, ts: i64) -> std::result::Result<(), Failure> {
        let name = self.config.checkpoint_name();
        let current = self.load_checkpoint().await;
        if current.is_some_and(|c| c >= ts) {
            return Ok(());
        }
        self.catalog
            .set_checkpoint(&name, &ts.to_string(), now_us())
            .await
            .map_err(|e| Failure::Transient(format!("cannot save the Cosmos DB checkpoint: {e}")))
    }

    async fn container(&self) -> std::result::Result<ContainerClient, Failure> {
        let mut slot = self.container.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = &self.config;
        let endpoint = config.check()?;
        let validation = if config.accept_invalid_certs {
            ServerCertificateValidation::RequiredUnlessEmulator
        } else {
            // Explicit, so that AZURE_COSMOS_EMULATOR_SERVER_CERT_VALIDATION_DISABLED in
            // the environment cannot weaken production.
            ServerCertificateValidation::Required
        };
        let pool = ConnectionPoolOptions::builder()
            .with_server_certificate_validation(validation)
            .build()
            .map_err(|e| Failure::Config(format!("Cosmos DB connection settings: {e}")))?;
        let runtime = CosmosRuntime::builder()
            .with_connection_pool(pool)
            .build()
            .await
            .map_err(|e| Failure::Config(format!("Cosmos DB client runtime: {e}")))?;
        let routing = match &config.region {
            Some(r) => RoutingStrategy::ProximityTo(Region::new(r.clone())),
            None => RoutingStrategy::PreferredRegions(Vec::new()),
        };
        let account = AccountReference::with_authentication_key(endpoint, config.key.clone());
        let client = CosmosClient::builder()
            .with_runtime(runtime)
            // Documents are archived as the JSON text Cosmos returns; the binary
            // encoding would make the SDK re-serialise them.
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
            .build(account, routing)
            .await
            .map_err(|e| classify(config, "connecting", &e))?;
        let container = client
            .database_client(config.database.as_str())
            .container_client(config.container.as_str(), None)
            .await
            .map_err(|e| classify(config, "opening the container", &e))?;
        *slot = Some(container.clone());
        Ok(container)
    }

    /// Reads every document from the cursor's checkpoint (less the overlap, but not
    /// below what is settled) to the end of the container, stores them, and advances the
    /// checkpoint after each durable step.
    async fn pass(
        &self,
        cursor: &mut Cursor,
        tally: &mut Tally,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> std::result::Result<(), Failure> {
        let container = self.container().await?;
        let overlap = i64::try_from(self.config.overlap_secs).unwrap_or(i64::MAX);
        let started = now_us() / 1_000_000;
        let since = cursor
            .checkpoint
            .map_or(0, |c| c.saturating_sub(overlap).max(cursor.settled).max(0));
        self.read_from(&container, since, overlap, cursor, tally, progress)
            .await?;
        // The overlap bounds how late a write becomes visible, so every document with a
        // `_ts` more than `overlap` before this pass started was visible when it did,
        // and the pass read all of them from `since` on. (This assumes this machine's
        // clock is within a few seconds of Cosmos DB's; the overlap is a minute.)
        let settled = started
            .saturating_sub(overlap)
            .min(cursor.checkpoint.map_or(0, |c| c.saturating_add(1)));
        if since <= settled {
            cursor.settled = cursor.settled.max(settled);
        }
        Ok(())
    }

    /// Reads every document from `since` to the end of the container, stores them, and
    /// advances the checkpoint after each durable step.
    async fn read_from(
        &self,
        container: &ContainerClient,
        mut since: i64,
        overlap: i64,
        cursor: &mut Cursor,
        tally: &mut Tally,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> std::result::Result<(), Failure> {
        cursor.prune(since);
        let page = self.config.page_size.clamp(1, MAX_STEP_DOCUMENTS);
        let mut limit = page;
        loop {
            let items = self.read_step(container, since, limit).await?;
            let full = items.len() >= limit as usize;
            let (Some(first), Some(last)) = (items.first(), items.last()) else {
                return Ok(());
            };
            let (first_ts, last_ts) = (first.ts, last.ts);
            if full && first_ts == last_ts && limit < MAX_STEP_DOCUMENTS {
                // One second fills the whole step: widen it until the second ends, so
                // the step can finish that second without relying on a continuation.
                limit = limit.saturating_mul(2).min(MAX_STEP_DOCUMENTS);
                continue;
            }
            limit = page;
            // A full step may have cut its last second short; that second is read again
            // by the next step, so only the seconds before it are complete now.
            let (done, complete_to): (Vec<Item>, i64) = if full && first_ts != last_ts {
                (
                    items.into_iter().filter(|i| i.ts < last_ts).collect(),
                    last_ts - 1,
                )
            } else {
                (items, last_ts)
            };
            self.store(done, cursor, tally, progress).await?;
            if cursor.checkpoint.is_none_or(|c| c < complete_to) {
                self.save_checkpoint(complete_to).await?;
                cursor.checkpoint = Some(complete_to);
            }
            cursor.prune(
                cursor
                    .checkpoint
                    .unwrap_or_default()
                    .saturating_sub(overlap),
            );
            if !full {
                return Ok(());
            }
            since = if first_ts == last_ts {
                last_ts + 1
            } else {
                last_ts
            };
        }
    }

    /// One query: the first `limit` documents from `since` on, in `_ts` order.
    async fn read_step(
        &self,
        container: &ContainerClient,
        since: i64,
        limit: u32,
    ) -> std::result::Result<Vec<Item>, Failure> {
        let config = &self.config;
        let doing = format!("reading documents from _ts {since}");
        // TOP takes a literal here: `limit` is this source's own number, not input.
        let query = Query::from(format!(
            "SELECT TOP {limit} * FROM c WHERE c._ts >= @since ORDER BY c._ts"
        ))
        .with_parameter("@since", since)
        .map_err(|e| Failure::Config(format!("building the Cosmos DB query: {e}")))?;
        let page_hint = NonZeroU32::new(limit.min(config.page_size.max(1)))
            .map_or(MaxItemCountHint::ServerDecides, MaxItemCountHint::Limit);
        let options = QueryOptions::default().with_max_item_count(page_hint);
        let mut pages = container
            .query_items::<Box<RawValue>>(query, FeedScope::full_container(), Some(options))
            .await
            .map_err(|e| classify(config, &doing, &e))?
            .into_pages();
        let mut items = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(config, &doing, &e))?;
            items.extend(page.into_items().into_iter().map(item_of));
        }
        // The server sorts; sorting again (stable) guards the step logic against a
        // server that interleaves partitions loosely.
        items.sort_by_key(|i| i.ts);
        Ok(items)
    }

    /// Validates and submits documents, waits until they are durable, and records
    /// their versions so the overlap window does not submit them again.
    async fn store(
        &self,
        items: Vec<Item>,
        cursor: &mut Cursor,
        tally: &mut Tally,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> std::result::Result<(), Failure> {
        let fresh: Vec<Item> = items
            .into_iter()
            .filter(|i| !cursor.already_submitted(i))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let registry = self.registry.clone();
        let detail = self.config.label();
        let (fresh, prepared, locations) = tokio::task::spawn_blocking(move || {
            let locations: Vec<String> = fresh
                .iter()
                .map(|i| format!("id={} _ts={}", i.id, i.ts))
                .collect();
            let pieces: Vec<Piece<'_>> = fresh
                .iter()
                .zip(&locations)
                .map(|(i, location)| Piece {
                    location: location.clone(),
                    bytes: i.raw.get().as_bytes(),
                })
                .collect();
            let prepared: Vec<Prepared> = prepare(&registry, &pieces, &detail);
            drop(pieces);
            (fresh, prepared, locations)
        })
        .await
        .map_err(|e| Failure::Transient(format!("validation task failed: {e}")))?;
        let outcomes = self.submit(prepared).await?;
        for (o, location) in outcomes.iter().zip(&locations) {
            if let (OutcomeKind::Rejected, Some(err)) = (o.status, &o.error) {
                tracing::warn!(source = %self.config.label(), document = %location, reason = %err, "Cosmos DB document rejected");
            }
        }
        tally.record(&outcomes, &locations);
        progress(tally.summary.documents);
        for item in fresh {
            if let Some((rid, etag)) = item.version {
                cursor.submitted.insert(rid, (etag, item.ts));
            }
        }
        Ok(())
    }
}

fn next_backoff(current: Duration, max: Duration) -> Duration {
    let next = if current.is_zero() {
        Duration::from_secs(1)
    } else {
        current.saturating_mul(2)
    };
    // A little jitter keeps several sources from retrying in lockstep.
    let jitter = Duration::from_millis((now_us().rem_euclid(250)) as u64);
    (next + jitter).min(max.max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let config = CosmosConfig::new("https://a.example/", "s3cr3t-key", "db", "c");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-key"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn invalid_certificates_are_refused_for_remote_hosts() {
        let mut config = CosmosConfig::new("https://a.example/", "k", "db", "c");
        config.accept_invalid_certs = true;
        let err = config.check().map(|_| ()).map_err(|f| f.message());
        assert!(
            err.as_ref().is_err_and(|m| m.contains("only possible")),
            "{err:?}"
        );
        let mut local = CosmosConfig::new("https://127.0.0.1:8081/", "k", "db", "c");
        local.accept_invalid_certs = true;
        assert!(local.check().is_ok());
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let max = Duration::from_secs(10);
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            b = next_backoff(b, max);
            seen.push(b);
        }
        assert!(seen[0] >= Duration::from_secs(1) && seen[0] < Duration::from_secs(2));
        assert!(seen[1] >= Duration::from_secs(2));
        assert!(seen.iter().all(|d| *d <= max));
        assert_eq!(*seen.last().unwrap_or(&Duration::ZERO), max);
    }

    #[test]
    fn system_properties_are_read_and_missing_ones_tolerated() {
        let raw = RawValue::from_string(
            r#"{"id":"a","_ts":17,"_rid":"r","_etag":"\"e\"","ChatHeader":{}}"#.into(),
        )
        .expect("raw");
        let item = item_of(raw);
        assert_eq!((item.id.as_str(), item.ts), ("a", 17));
        assert_eq!(item.version, Some(("r".into(), "\"e\"".into())));
        let odd = item_of(RawValue::from_string("[1,2]".into()).expect("raw"));
        assert_eq!((odd.ts, odd.version), (0, None));
    }
}
