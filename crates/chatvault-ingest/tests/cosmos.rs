//! The Cosmos DB source against a real emulator: `@vercel/cosmosdb-server` from npm
//! (installed by `npm ci --prefix tests/cosmos-emulator`), served over HTTP/2 with its
//! self-signed certificate on a free loopback port by `tests/cosmos-emulator/front.js`.
//! Each test starts its own emulator and stops it when the test ends.

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::ContainerProperties;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosRuntime, FeedScope, RoutingStrategy,
};
use chatvault_archive::{read_records, Archive, ArchiveConfig, Operation, Source};
use chatvault_catalog::Catalog;
use chatvault_gen::Generator;
use chatvault_ingest::{
    prepare, BackfillSummary, CosmosConfig, CosmosSource, IngestError, OutcomeKind, Piece,
    Pipeline, PipelineConfig, Prepared,
};
use chatvault_model::SchemaRegistry;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The well-known, public key of the Cosmos DB emulator (what front.js expects).
const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";
const DB: &str = "chatserver";

// ---------------------------------------------------------------------------------------
// The emulator process

struct Emulator {
    child: Child,
    port: u16,
}

impl Emulator {
    fn start() -> Emulator {
        Emulator::start_with(&[])
    }

    fn start_with(envs: &[(&str, &Path)]) -> Emulator {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cosmos-emulator");
        assert!(
            dir.join("node_modules/@vercel/cosmosdb-server").is_dir(),
            "the Cosmos DB emulator is not installed: run `npm ci --prefix tests/cosmos-emulator` \
             (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("front.js"))
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js 20+ installed?)");
        let stdout = child.stdout.take().expect("emulator stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the emulator's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the emulator did not print its port (got {line:?}, exit {:?})",
                child.try_wait()
            )
        });
        Emulator { child, port }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// A source configuration for this emulator, tuned for fast tests.
    fn config(&self, container: &str) -> CosmosConfig {
        let mut config = CosmosConfig::new(self.endpoint(), EMULATOR_KEY, DB, container);
        config.accept_invalid_certs = true;
        config.poll_interval = Duration::from_millis(200);
        config.overlap_secs = 2;
        config.page_size = 100;
        config.max_backoff = Duration::from_secs(1);
        config
    }

    /// Makes the next `count` document queries fail with `status`.
    async fn inject_faults(&self, status: u16, count: u32) {
        post_faults(self.port, &json!({"status": status, "count": count})).await;
    }

    /// Makes the next `count` queries whose text contains `matching` fail with
    /// `status`, after letting `skip` of them through.
    async fn inject_faults_matching(&self, status: u16, count: u32, matching: &str, skip: u32) {
        post_faults(
            self.port,
            &json!({"status": status, "count": count, "match": matching, "skip": skip}),
        )
        .await;
    }

    async fn clear_faults(&self) {
        post_faults(self.port, &json!({"count": 0})).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs a fault specification to the front's control path. An HTTP/2 TLS client is not
/// worth a dependency here, so `node` itself sends it.
async fn post_faults(port: u16, body: &Value) {
    // Debug-quoting a string yields a valid JavaScript string literal.
    let body = body.to_string();
    let script = format!(
        "const h=require('http2');const c=h.connect('https://127.0.0.1:{port}',{{rejectUnauthorized:false}});\
         const r=c.request({{':method':'POST',':path':'/__chatvault/faults','content-type':'application/json'}});\
         r.on('response',()=>{{}});r.on('end',()=>c.close());r.resume();r.end({body:?});"
    );
    let status = tokio::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .status()
        .await
        .expect("run node");
    assert!(status.success());
}

// ---------------------------------------------------------------------------------------
// Loading data through the SDK, as the chat server would

async fn admin_client(emulator: &Emulator) -> CosmosClient {
    let pool = ConnectionPoolOptions::builder()
        .with_server_certificate_validation(ServerCertificateValidation::RequiredUnlessEmulator)
        .build()
        .expect("pool options");
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await
        .expect("runtime");
    let endpoint: AccountEndpoint = emulator.endpoint().parse().expect("endpoint");
    CosmosClient::builder()
        .with_runtime(runtime)
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
        .build(
            AccountReference::with_authentication_key(endpoint, EMULATOR_KEY.to_owned()),
            RoutingStrategy::PreferredRegions(Vec::new()),
        )
        .await
        .expect("admin client")
}

async fn create_container(client: &CosmosClient, name: &str) -> ContainerClient {
    // The database may exist already (several containers per test).
    let _ = client.create_database(DB, None).await;
    client
        .database_client(DB)
        .create_container(
            ContainerProperties::new(name.to_owned(), "/id".into()),
            None,
        )
        .await
        .expect("create container");
    client
        .database_client(DB)
        .container_client(name, None)
        .await
        .expect("container client")
}

/// Chat `index` as the chat server stores it in Cosmos DB: `id` is the ChatUID.
fn chat(generator: &Generator, index: u64) -> Value {
    let mut doc = generator.chat(index);
    let uid = doc["ChatHeader"]["ChatUID"]
        .as_str()
        .expect("generated ChatUID")
        .to_owned();
    doc["id"] = Value::String(uid);
    doc
}

async fn delete_all(container: &ContainerClient, ids: &[String]) {
    for id in ids {
        container
            .delete_item(id.clone(), id, None)
            .await
            .expect("delete a document");
    }
}

async fn upsert_all(container: &ContainerClient, docs: Vec<Value>) {
    futures::stream::iter(docs)
        .map(|doc| async move {
            let id = doc["id"].as_str().expect("id").to_owned();
            container
                .upsert_item(id.clone(), &id, &doc, None)
                .await
                .map(|_| ())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("upsert documents");
}

/// Every `_ts` in the container, as the server assigned them.
async fn all_ts(container: &ContainerClient) -> Vec<i64> {
    // The emulator refuses `SELECT VALUE c._ts FROM c` as a single-partition query;
    // this is the form the source itself uses.
    let docs: Vec<Value> = container
        .query_items::<Value>(
            "SELECT * FROM c WHERE c._ts >= 0 ORDER BY c._ts",
            FeedScope::full_container(),
            None,
        )
        .await
        .expect("query _ts")
        .try_collect()
        .await
        .expect("read _ts");
    docs.iter()
        .map(|d| d["_ts"].as_i64().expect("_ts"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The archive side

struct Vault {
    dir: tempfile::TempDir,
    catalog: Catalog,
    pipeline: Pipeline,
    store: chatvault_store::Store,
    registry: Arc<SchemaRegistry>,
}

impl Vault {
    async fn open(dir: tempfile::TempDir) -> Vault {
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        let catalog = Catalog::connect(&url).await.expect("catalog");
        let archive_dir = dir.path().join("archive");
        // A previous pipeline's worker may still be closing the archive.
        let deadline = Instant::now() + Duration::from_secs(10);
        let archive = loop {
            match Archive::open(ArchiveConfig::new(&archive_dir)) {
                Ok((a, _)) => break a,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("open archive: {e}"),
            }
        };
        chatvault_ingest::catch_up_catalog(archive_dir, &catalog)
            .await
            .expect("catch up");
        let store = chatvault_store::Store::open(
            chatvault_store::StoreConfig::new(dir.path().join("store")),
            catalog.clone(),
        )
        .await
        .expect("store");
        let pipeline = Pipeline::start(
            archive,
            catalog.clone(),
            store.clone(),
            PipelineConfig::default(),
        );
        let registry = Arc::new(SchemaRegistry::new(8 * 1024 * 1024).expect("schemas"));
        Vault {
            dir,
            catalog,
            pipeline,
            store,
            registry,
        }
    }

    async fn new() -> Vault {
        Vault::open(tempfile::tempdir().expect("tempdir")).await
    }

    fn source(&self, config: CosmosConfig) -> CosmosSource {
        CosmosSource::new(
            config,
            self.pipeline.clone(),
            self.registry.clone(),
            self.catalog.clone(),
        )
        .expect("valid configuration")
    }

    /// Closes the pipeline and opens everything again, as a restarted process would.
    async fn restart(self) -> Vault {
        let Vault {
            dir,
            catalog,
            pipeline,
            store,
            registry,
        } = self;
        drop(pipeline);
        drop(store);
        drop(registry);
        catalog.close().await;
        Vault::open(dir).await
    }

    async fn live_chats(&self) -> u64 {
        self.catalog.chat_counts(None).await.expect("count").0
    }

    /// Archive records per ChatUID (all from the Cosmos source).
    fn records(&self) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for record in read_records(&self.dir.path().join("archive"), 0).expect("read archive") {
            let record = record.expect("record");
            assert_eq!(record.entry.source, Source::Cosmos);
            *out.entry(record.entry.chat_uid).or_default() += 1;
        }
        out
    }

    /// Every archive record as (ChatUID, source, operation, source detail).
    fn all_records(&self) -> Vec<(String, Source, Operation, String)> {
        read_records(&self.dir.path().join("archive"), 0)
            .expect("read archive")
            .map(|r| {
                let e = r.expect("record").entry;
                (e.chat_uid, e.source, e.operation, e.source_detail)
            })
            .collect()
    }

    /// Sends a document the way the webhook does once it has read the request.
    async fn send_like_the_webhook(&self, doc: &Value) -> OutcomeKind {
        let bytes = serde_json::to_vec(doc).expect("serialise");
        let prepared = prepare(
            &self.registry,
            &[Piece {
                location: String::new(),
                bytes: &bytes,
            }],
            "webhook test",
        );
        let outcomes = self
            .pipeline
            .submit(Source::Webhook, prepared)
            .await
            .expect("webhook submit");
        outcomes[0].status
    }

    /// Live chats among `uids` (true) and deleted ones (false).
    async fn live(&self, uids: &[String]) -> HashMap<String, bool> {
        let uids: Vec<&str> = uids.iter().map(String::as_str).collect();
        self.catalog
            .lookup(&uids)
            .await
            .expect("lookup")
            .into_iter()
            .map(|(uid, state)| (uid, !state.deleted))
            .collect()
    }

    /// The chats the columnar store holds as current, after a flush.
    async fn stored_chats(&self) -> HashMap<String, Vec<i64>> {
        self.store.flush().await.expect("flush the store");
        self.store.current_versions().expect("current versions")
    }

    async fn checkpoint(&self, config: &CosmosConfig) -> Option<i64> {
        self.catalog
            .checkpoint(&config.checkpoint_name())
            .await
            .expect("checkpoint")
            .and_then(|c| c.parse().ok())
    }

    async fn wait_for_chats(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let live = self.live_chats().await;
            if live >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {live} of {n} chats arrived within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running source, with its status reports.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), IngestError>>,
    statuses: Arc<Mutex<Vec<(bool, String)>>>,
}

impl Running {
    fn start(source: CosmosSource) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let seen = statuses.clone();
        let task = tokio::spawn(source.run(shutdown, move |ready, message| {
            seen.lock().expect("statuses").push((ready, message));
        }));
        Running {
            stop,
            task,
            statuses,
        }
    }

    async fn wait_for_status(&self, what: &str, f: impl Fn(bool, &str) -> bool) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self
                .statuses
                .lock()
                .expect("statuses")
                .iter()
                .find(|(ready, m)| f(*ready, m))
                .cloned()
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no status {what}; saw {:?}",
                self.statuses.lock().expect("statuses")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the source stops promptly")
            .expect("source task");
        result.expect("the source ends without error");
    }
}

fn assert_each_once(records: &HashMap<String, u32>, expected: u64) {
    assert_eq!(records.len() as u64, expected, "distinct chats archived");
    let dupes: Vec<_> = records.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dupes.is_empty(), "chats archived more than once: {dupes:?}");
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_ten_thousand_documents() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(11);
    upsert_all(
        &container,
        (0..10_000).map(|i| chat(&generator, i)).collect(),
    )
    .await;

    let vault = Vault::new().await;
    let mut config = emulator.config("chats");
    config.page_size = 1000;
    let source = vault.source(config.clone());
    let reported = Mutex::new(Vec::new());
    let summary: BackfillSummary = source
        .backfill(&|n| reported.lock().expect("progress").push(n))
        .await
        .expect("backfill");
    assert_eq!(summary.documents, 10_000, "{summary:?}");
    assert_eq!(
        summary.outcomes.count(OutcomeKind::Accepted),
        10_000,
        "{summary:?}"
    );
    assert!(
        summary.outcomes.rejections.is_empty(),
        "{:?}",
        summary.outcomes.rejections
    );
    let reported = reported.into_inner().expect("progress");
    assert!(reported.windows(2).all(|w| w[0] < w[1]), "{reported:?}");
    assert_eq!(reported.last(), Some(&10_000));
    assert!(reported.len() >= 5, "progress in steps: {reported:?}");

    assert_eq!(vault.live_chats().await, 10_000);
    assert_each_once(&vault.records(), 10_000);
    let max_ts = all_ts(&container).await.into_iter().max();
    assert_eq!(vault.checkpoint(&config).await, max_ts);
    assert_eq!(summary.checkpoint, max_ts);

    // A second backfill reads everything again and stores nothing new.
    let again = source.backfill(&|_| {}).await.expect("second backfill");
    assert_eq!(
        again.outcomes.count(OutcomeKind::Unchanged),
        10_000,
        "{again:?}"
    );
    assert_each_once(&vault.records(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_documents_added_and_updated_while_running() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(22);
    upsert_all(&container, (0..50).map(|i| chat(&generator, i)).collect()).await;

    let vault = Vault::new().await;
    let running = Running::start(vault.source(emulator.config("chats")));
    vault.wait_for_chats(50, Duration::from_secs(30)).await;
    running
        .wait_for_status("ready", |ready, m| ready && m.contains("up to date"))
        .await;

    // New chats, and new versions of ten known chats (a missed chat answered later).
    upsert_all(&container, (50..80).map(|i| chat(&generator, i)).collect()).await;
    let updated: Vec<Value> = (0..10)
        .map(|i| {
            let mut doc = chat(&generator, i);
            doc["ChatHeader"]["Rating"] = json!(5);
            doc["ChatHeader"]["WrapUpValue"] = json!("followed up");
            doc
        })
        .collect();
    let updated_uids: Vec<String> = updated
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    upsert_all(&container, updated).await;
    vault.wait_for_chats(80, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let uids: Vec<&str> = updated_uids.iter().map(String::as_str).collect();
        let states = vault.catalog.lookup(&uids).await.expect("lookup");
        if states.values().filter(|s| s.version == 2).count() == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "updates not archived: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let several polls re-read the overlap window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.stop().await;

    let records = vault.records();
    assert_eq!(records.len(), 80);
    assert_eq!(records.values().filter(|n| **n == 2).count(), 10);
    assert_eq!(records.values().filter(|n| **n == 1).count(), 70);
    // Re-reading the overlap window submitted nothing twice: no `unchanged` outcomes.
    let stats = vault.catalog.ingest_stats().await.expect("stats");
    let unchanged: i64 = stats
        .iter()
        .filter(|s| s.source == "cosmos" && s.outcome == "unchanged")
        .map(|s| s.documents)
        .sum();
    assert_eq!(unchanged, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_resumes_without_loss_or_duplicates() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(33);
    // Six batches a little over a second apart, so the documents span several `_ts`
    // seconds and the source checkpoints between them.
    for batch in 0..6u64 {
        upsert_all(
            &container,
            (batch * 400..(batch + 1) * 400)
                .map(|i| chat(&generator, i))
                .collect(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    let vault = Vault::new().await;
    let mut config = emulator.config("chats");
    config.page_size = 150;
    let running = Running::start(vault.source(config.clone()));
    // Stop as soon as part of the container is durable and checkpointed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = vault.live_chats().await;
        if live > 0 && vault.checkpoint(&config).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "nothing ingested");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
    let first_run = vault.live_chats().await;
    let checkpoint = vault.checkpoint(&config).await;
    assert!(
        first_run < 2400,
        "stopped in the middle ({first_run} of 2400)"
    );

    // More chats arrive while the source is down.
    upsert_all(
        &container,
        (2400..2600).map(|i| chat(&generator, i)).collect(),
    )
    .await;

    let vault = vault.restart().await;
    assert_eq!(
        vault.checkpoint(&config).await,
        checkpoint,
        "checkpoint kept"
    );
    let running = Running::start(vault.source(config.clone()));
    vault.wait_for_chats(2600, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    assert_each_once(&vault.records(), 2600);
    assert_eq!(
        vault.checkpoint(&config).await,
        all_ts(&container).await.into_iter().max()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_sharing_one_ts_second_is_not_lost() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(44);

    let vault = Vault::new().await;
    let mut config = emulator.config("chats");
    // Pages far smaller than one second's burst, and polls within the second.
    config.page_size = 7;
    config.poll_interval = Duration::from_millis(50);
    config.overlap_secs = 0;
    let running = Running::start(vault.source(config.clone()));
    running.wait_for_status("ready", |ready, _| ready).await;

    // Keep writing for about three seconds while the source polls.
    let started = Instant::now();
    let mut next = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        upsert_all(
            &container,
            (next..next + 40).map(|i| chat(&generator, i)).collect(),
        )
        .await;
        next += 40;
    }
    vault.wait_for_chats(next, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;

    let mut per_second: HashMap<i64, u32> = HashMap::new();
    for ts in all_ts(&container).await {
        *per_second.entry(ts).or_default() += 1;
    }
    assert!(
        per_second.values().any(|n| *n > 7 * 4),
        "the test needs seconds with many documents: {per_second:?}"
    );
    assert_each_once(&vault.records(), next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_rejected_with_reasons_and_do_not_stop_the_source() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(55);
    let mut docs: Vec<Value> = (0..20).map(|i| chat(&generator, i)).collect();
    docs.push(json!({"id": "not-a-chat", "hello": "world"}));
    let mut bad_uid = chat(&generator, 100);
    bad_uid["ChatHeader"]["ChatUID"] = json!("not hex");
    bad_uid["id"] = json!("bad-uid");
    docs.push(bad_uid);
    upsert_all(&container, docs).await;

    let vault = Vault::new().await;
    let config = emulator.config("chats");
    let summary = vault
        .source(config.clone())
        .backfill(&|_| {})
        .await
        .expect("backfill");
    assert_eq!(
        summary.outcomes.count(OutcomeKind::Accepted),
        20,
        "{summary:?}"
    );
    assert_eq!(
        summary.outcomes.count(OutcomeKind::Rejected),
        2,
        "{summary:?}"
    );
    assert!(
        summary
            .outcomes
            .rejections
            .iter()
            .any(|r| r.starts_with("id=not-a-chat ") && r.contains("ChatHeader")),
        "{:?}",
        summary.outcomes.rejections
    );
    assert!(
        summary
            .outcomes
            .rejections
            .iter()
            .any(|r| r.starts_with("id=bad-uid ") && r.contains("ChatUID")),
        "{:?}",
        summary.outcomes.rejections
    );

    // The running source steps over invalid documents and keeps going.
    let running = Running::start(vault.source(config));
    upsert_all(
        &container,
        vec![
            json!({"id": "also-bad", "ChatHeader": 5}),
            chat(&generator, 20),
            chat(&generator, 21),
        ],
    )
    .await;
    vault.wait_for_chats(22, Duration::from_secs(30)).await;
    let (_, message) = running
        .wait_for_status("ready with rejections", |ready, m| {
            // After a restart the overlap window is read again, so the two earlier
            // invalid documents may be counted (and logged) again besides the new one.
            ready && m.contains("up to date") && !m.contains(" 0 rejected")
        })
        .await;
    assert!(message.contains("cosmos chatserver/chats"), "{message}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_clear_error() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    upsert_all(&container, vec![chat(&Generator::new(66), 0)]).await;

    let vault = Vault::new().await;
    let wrong = "d3JvbmcgYnV0IHdlbGwtZm9ybWVkIGtleSB3cm9uZyBidXQgd2VsbC1mb3JtZWQga2V5IQ==";
    let mut config = emulator.config("chats");
    config.key = wrong.to_owned();
    let err = vault
        .source(config.clone())
        .backfill(&|_| {})
        .await
        .expect_err("a wrong key fails");
    let message = err.to_string();
    eprintln!("wrong key, as reported: {message}");
    assert!(
        message.contains("refused the account key") && message.contains("401"),
        "{message}"
    );
    assert!(
        !message.contains(wrong),
        "the key must never be shown: {message}"
    );

    // The long-running source reports it and keeps trying instead of exiting.
    let running = Running::start(vault.source(config));
    let (ready, status) = running
        .wait_for_status("key refused", |_, m| m.contains("refused the account key"))
        .await;
    assert!(!ready);
    assert!(!status.contains(wrong));
    running.stop().await;
    assert_eq!(vault.live_chats().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_is_reported_until_it_appears() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let _ = admin.create_database(DB, None).await;
    let vault = Vault::new().await;
    let running = Running::start(vault.source(emulator.config("later")));
    let (ready, _) = running
        .wait_for_status("not found", |_, m| m.contains("not found"))
        .await;
    assert!(!ready);

    let container = create_container(&admin, "later").await;
    let generator = Generator::new(77);
    upsert_all(&container, (0..30).map(|i| chat(&generator, i)).collect()).await;
    vault.wait_for_chats(30, Duration::from_secs(30)).await;
    running
        .wait_for_status("ready", |ready, m| ready && m.contains("up to date"))
        .await;
    running.stop().await;
    assert_each_once(&vault.records(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_outages_are_retried() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(88);
    upsert_all(&container, (0..300).map(|i| chat(&generator, i)).collect()).await;

    let vault = Vault::new().await;
    let source = vault.source(emulator.config("chats"));
    // More 429s in a row than the SDK retries by itself, then a short outage.
    emulator.inject_faults(429, 25).await;
    let summary = source
        .backfill(&|_| {})
        .await
        .expect("backfill despite 429s");
    assert_eq!(
        summary.outcomes.count(OutcomeKind::Accepted),
        300,
        "{summary:?}"
    );

    upsert_all(
        &container,
        (300..320).map(|i| chat(&generator, i)).collect(),
    )
    .await;
    emulator.inject_faults(503, 6).await;
    let running = Running::start(source);
    vault.wait_for_chats(320, Duration::from_secs(60)).await;
    running
        .wait_for_status("ready", |ready, m| ready && m.contains("up to date"))
        .await;
    running.stop().await;
    assert_each_once(&vault.records(), 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_verified_unless_asked_otherwise() {
    let emulator = Emulator::start();
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    upsert_all(&container, vec![chat(&Generator::new(99), 0)]).await;

    let vault = Vault::new().await;
    let mut config = emulator.config("chats");
    config.accept_invalid_certs = false;
    let err = vault
        .source(config)
        .backfill(&|_| {})
        .await
        .expect_err("the emulator's self-signed certificate is not trusted by default");
    eprintln!("untrusted certificate, as reported: {err}");
    assert!(
        err.to_string().contains("certificate"),
        "the error names the certificate: {err}"
    );
    assert_eq!(vault.live_chats().await, 0);

    // Only loopback endpoints may skip verification.
    let remote = CosmosConfig {
        accept_invalid_certs: true,
        ..CosmosConfig::new("https://example.invalid/", EMULATOR_KEY, DB, "chats")
    };
    let refused = CosmosSource::new(
        remote,
        vault.pipeline.clone(),
        vault.registry.clone(),
        vault.catalog.clone(),
    )
    .expect_err("refused");
    assert!(refused.to_string().contains("only possible"), "{refused}");

    // A CA file must be the one the TLS stack will actually read.
    let ca = vault.dir.path().join("ca.pem");
    std::fs::write(&ca, "not used").expect("write");
    let with_ca = CosmosConfig {
        ca_file: Some(PathBuf::from(&ca)),
        ..emulator.config("chats")
    };
    let refused = CosmosSource::new(
        with_ca,
        vault.pipeline.clone(),
        vault.registry.clone(),
        vault.catalog.clone(),
    )
    .expect_err("refused");
    assert!(refused.to_string().contains("SSL_CERT_FILE"), "{refused}");
}

/// Set by `a_ca_file_is_trusted` for the child process that runs `ca_file_child`.
const CA_CHILD_PORT: &str = "CHATVAULT_TEST_COSMOS_CA_PORT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_is_trusted() {
    // A private CA and a server certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "chatvault test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let mut server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, cert_pem, key_pem) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server-key.pem"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write CA");
    std::fs::write(&cert_pem, server_cert.pem()).expect("write certificate");
    std::fs::write(&key_pem, server_key.serialize_pem()).expect("write key");

    let emulator = Emulator::start_with(&[
        ("COSMOS_FRONT_CERT", cert_pem.as_path()),
        ("COSMOS_FRONT_KEY", key_pem.as_path()),
    ]);
    let admin = admin_client(&emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(111);
    upsert_all(&container, (0..3).map(|i| chat(&generator, i)).collect()).await;

    // The TLS stack reads extra trust anchors only from SSL_CERT_FILE, which is set in a
    // process before it starts (never changed at run time), so the check runs in a child
    // process of this test binary.
    let output = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["ca_file_child", "--exact", "--ignored", "--nocapture"])
        .env(chatvault_ingest::CA_FILE_ENV, &ca_pem)
        .env(CA_CHILD_PORT, emulator.port.to_string())
        .output()
        .await
        .expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_ca_file_is_trusted in a child process with SSL_CERT_FILE set"]
async fn ca_file_child() {
    let port: u16 = std::env::var(CA_CHILD_PORT)
        .expect("started by a_ca_file_is_trusted")
        .parse()
        .expect("port");
    let ca = PathBuf::from(std::env::var_os(chatvault_ingest::CA_FILE_ENV).expect("CA file"));
    let vault = Vault::new().await;
    let mut config = CosmosConfig::new(
        format!("https://127.0.0.1:{port}/"),
        EMULATOR_KEY,
        DB,
        "chats",
    );
    config.ca_file = Some(ca);
    assert!(!config.accept_invalid_certs);
    let summary = vault
        .source(config)
        .backfill(&|_| {})
        .await
        .expect("backfill over TLS verified against the CA file");
    assert_eq!(
        summary.outcomes.count(OutcomeKind::Accepted),
        3,
        "{summary:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Documents deleted from the container

/// A configuration that reconciles often, so a test sees several reconciles.
fn mirroring(emulator: &Emulator, container: &str) -> CosmosConfig {
    let mut config = emulator.config(container);
    config.mirror_deletes = true;
    config.reconcile_interval = Duration::from_millis(300);
    config
}

fn uids(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A source mirroring deletes from the container "chats" into `vault`, once it has stored
/// the container's `n` chats and reconciled them once.
async fn mirroring_and_reconciled(emulator: &Emulator, vault: &Vault, n: u64) -> Running {
    let running = Running::start(vault.source(mirroring(emulator, "chats")));
    vault.wait_for_chats(n, Duration::from_secs(30)).await;
    let first = format!("deletes mirrored: last reconcile listed {n} chats");
    running
        .wait_for_status("a first reconcile", |ready, m| ready && m.contains(&first))
        .await;
    running
}

/// A container "chats" holding chats `0..n` of generator `seed`, and those chats.
async fn container_with_chats(
    emulator: &Emulator,
    seed: u64,
    n: u64,
) -> (ContainerClient, Vec<Value>) {
    let admin = admin_client(emulator).await;
    let container = create_container(&admin, "chats").await;
    let generator = Generator::new(seed);
    let docs: Vec<Value> = (0..n).map(|i| chat(&generator, i)).collect();
    upsert_all(&container, docs.clone()).await;
    (container, docs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_deletes_are_not_mirrored_by_default() {
    let emulator = Emulator::start();
    let (container, docs) = container_with_chats(&emulator, 101, 20).await;
    let all = uids(&docs);

    let vault = Vault::new().await;
    let mut config = emulator.config("chats");
    // Only `mirror_deletes` turns mirroring on; a short interval alone does nothing.
    config.reconcile_interval = Duration::from_millis(300);
    assert!(!config.mirror_deletes, "off by default");
    let running = Running::start(vault.source(config));
    vault.wait_for_chats(20, Duration::from_secs(30)).await;
    delete_all(&container, &all[..5]).await;
    // Many polls and reconcile intervals later the chats are all still there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    running
        .wait_for_status("ready", |ready, m| ready && m.contains("up to date"))
        .await;
    assert!(
        running
            .statuses
            .lock()
            .expect("statuses")
            .iter()
            .all(|(_, m)| !m.contains("deletes mirrored")),
        "no reconcile ran"
    );
    running.stop().await;
    assert_eq!(vault.live_chats().await, 20);
    assert!(vault.live(&all).await.values().all(|live| *live));
    assert_eq!(vault.stored_chats().await.len(), 20);
    assert!(vault
        .all_records()
        .iter()
        .all(|(_, _, op, _)| *op == Operation::Upsert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_deletes_follow_the_container_but_spare_chats_sent_since_by_others() {
    let emulator = Emulator::start();
    let (container, docs) = container_with_chats(&emulator, 102, 30).await;
    let all = uids(&docs);

    let vault = Vault::new().await;
    let running = mirroring_and_reconciled(&emulator, &vault, 30).await;

    // Chat 5 is re-sent, changed, through the webhook: its latest version is the
    // webhook's now. Chat 6 is re-sent unchanged: nothing is stored, so its latest
    // version is still the one from Cosmos DB.
    let mut changed = docs[5].clone();
    changed["ChatHeader"]["WrapUpValue"] = json!("corrected by an agent");
    assert_eq!(
        vault.send_like_the_webhook(&changed).await,
        OutcomeKind::Updated
    );
    assert_eq!(
        vault.send_like_the_webhook(&docs[6]).await,
        OutcomeKind::Unchanged
    );
    let gone: Vec<String> = all[..7].to_vec();
    delete_all(&container, &gone).await;

    let mirrored: Vec<String> = gone.iter().filter(|u| **u != all[5]).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live = vault.live(&mirrored).await;
        if live.values().all(|l| !*l) {
            break;
        }
        assert!(Instant::now() < deadline, "deletes not mirrored: {live:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running
        .wait_for_status("the deletes counted", |ready, m| {
            ready && m.contains("(6 since start)")
        })
        .await;
    // Further reconciles find nothing more to delete.
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;

    // The catalog: six deleted, the webhook's chat and the 23 untouched ones live.
    assert_eq!(vault.live_chats().await, 24);
    let live = vault.live(&all).await;
    assert!(live[&all[5]], "the webhook's version is not deleted");
    assert!(all[7..].iter().all(|u| live[u]));
    let state = vault
        .catalog
        .chat(&all[5])
        .await
        .expect("lookup")
        .expect("chat 5");
    assert_eq!((state.version, state.deleted), (2, false));
    // A delete naming a version that is no longer current is dropped: what spares a chat
    // that changed while the container was being listed.
    let stale = vault
        .pipeline
        .submit(
            Source::Cosmos,
            vec![Prepared::Delete {
                chat_uid: all[5].clone(),
                detail: "a reconcile that saw version 1".into(),
                if_version: Some(1),
            }],
        )
        .await
        .expect("submit");
    assert_eq!(stale[0].status, OutcomeKind::Unchanged);
    assert!(vault.live(&all[5..6]).await[&all[5]]);

    // The store: the deleted chats are no longer current.
    let stored = vault.stored_chats().await;
    assert_eq!(stored.len(), 24, "{stored:?}");
    assert!(mirrored.iter().all(|u| !stored.contains_key(u)));
    assert!(stored.contains_key(&all[5]));

    // The archive: one delete record per mirrored chat, from the Cosmos source, saying
    // why; the chats' documents are still there.
    let records = vault.all_records();
    let deletes: Vec<_> = records
        .iter()
        .filter(|(_, _, op, _)| *op == Operation::Delete)
        .collect();
    assert_eq!(deletes.len(), 6, "{deletes:?}");
    for (uid, source, _, detail) in &deletes {
        assert!(mirrored.contains(uid), "{uid}");
        assert_eq!(*source, Source::Cosmos);
        assert!(detail.contains("no longer in the container"), "{detail}");
    }
    for uid in &mirrored {
        assert!(records
            .iter()
            .any(|(u, _, op, _)| u == uid && *op == Operation::Upsert));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_deletes_nothing() {
    let emulator = Emulator::start();
    // More chats than one listing page (100 in these tests), so the listing pages.
    let (container, docs) = container_with_chats(&emulator, 103, 150).await;
    let all = uids(&docs);

    let vault = Vault::new().await;
    let running = mirroring_and_reconciled(&emulator, &vault, 150).await;

    // The listing's first page is served, every page after it fails: a reconcile that
    // used what it had would delete the 50 chats on the pages it never saw.
    emulator
        .inject_faults_matching(503, 100_000, "c.ChatHeader.ChatUID >", 1)
        .await;
    delete_all(&container, &all[..10]).await;
    running
        .wait_for_status("a failed reconcile", |ready, m| {
            ready && m.contains("the last reconcile failed and deleted nothing")
        })
        .await;
    // Reconciles keep failing for a while; the source keeps polling meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vault.live_chats().await, 150);
    assert!(vault
        .all_records()
        .iter()
        .all(|(_, _, op, _)| *op == Operation::Upsert));

    // Once the container answers again the next reconcile mirrors the ten deletes.
    emulator.clear_faults().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while vault.live_chats().await != 140 {
        assert!(
            Instant::now() < deadline,
            "{} live chats",
            vault.live_chats().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    let live = vault.live(&all).await;
    assert!(all[..10].iter().all(|u| !live[u]));
    assert!(all[10..].iter().all(|u| live[u]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_from_another_container_stop_the_mirror() {
    let emulator = Emulator::start();
    let (container, docs) = container_with_chats(&emulator, 104, 10).await;
    let all = uids(&docs);
    let vault = Vault::new().await;
    // This archive once read another container too: its chats cannot be told apart from
    // this container's, so a document missing here proves nothing.
    vault
        .catalog
        .set_checkpoint("cosmos:chatserver/older", "1", 1)
        .await
        .expect("checkpoint");
    let running = Running::start(vault.source(mirroring(&emulator, "chats")));
    vault.wait_for_chats(10, Duration::from_secs(30)).await;
    delete_all(&container, &all[..3]).await;
    running
        .wait_for_status("the refusal", |ready, m| {
            ready
                && m.contains("the last reconcile failed and deleted nothing")
                && m.contains("cosmos:chatserver/older")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    assert_eq!(vault.live_chats().await, 10);
}
