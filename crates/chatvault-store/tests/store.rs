//! The store against a plain in-memory model, and partition pruning.

use chatvault_archive::{Archive, ArchiveConfig, Entry, Operation, Source};
use chatvault_catalog::{AppliedChange, Catalog};
use chatvault_model::{content_hash, flatten, ChatDocument, ContentHash};
use chatvault_store::{ScanFilter, Store, StoreConfig, StoreError, StoreUpdate};
use polars::prelude::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Archive, catalog and store wired the way the ingest pipeline wires them.
struct Harness {
    dir: tempfile::TempDir,
    rebuild_hold_bytes: usize,
    archive: Archive,
    catalog: Catalog,
    store: Store,
}

impl Harness {
    async fn new() -> Harness {
        Harness::holding(StoreConfig::new("").rebuild_hold_bytes).await
    }

    /// With a rebuild that keeps at most `rebuild_hold_bytes` of rows waiting to fill a row
    /// group in memory.
    async fn holding(rebuild_hold_bytes: usize) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::connect(&format!(
            "sqlite://{}",
            dir.path().join("catalog.db").display()
        ))
        .await
        .expect("catalog");
        let (archive, _) =
            Archive::open(ArchiveConfig::new(dir.path().join("archive"))).expect("archive");
        let store = Store::open(
            store_config(dir.path(), rebuild_hold_bytes),
            catalog.clone(),
        )
        .await
        .expect("store");
        Harness {
            dir,
            rebuild_hold_bytes,
            archive,
            catalog,
            store,
        }
    }

    async fn record(&self, uid: &str, site_key: i32, doc: Option<&serde_json::Value>) {
        let (operation, document, hash) = match doc {
            Some(d) => (
                Operation::Upsert,
                serde_json::to_vec(d).expect("json"),
                content_hash(d),
            ),
            None => (Operation::Delete, Vec::new(), ContentHash::ZERO),
        };
        let existed = self.catalog.chat(uid).await.expect("lookup").is_some();
        let entry = Entry {
            received_at_us: 0,
            source: Source::Import,
            source_detail: "test".into(),
            chat_uid: uid.to_owned(),
            site_key: i64::from(site_key),
            operation,
            schema_version: 1,
            content_hash: hash,
            document,
        };
        let pos = self.archive.append(vec![entry]).await.expect("append")[0];
        self.catalog
            .apply(
                &[AppliedChange {
                    seq: pos.seq,
                    segment: pos.segment,
                    chat_uid: uid.to_owned(),
                    site_key: i64::from(site_key),
                    deleted: doc.is_none(),
                    content_hash: hash,
                    received_at_us: 0,
                    source: "webhook".into(),
                }],
                &[],
            )
            .await
            .expect("catalog");
        let update = match doc {
            Some(d) => StoreUpdate::Upsert {
                seq: pos.seq,
                flat: Box::new(
                    flatten(ChatDocument::from_value(d).expect("model"), 0).into_owned(),
                ),
                supersedes: existed,
            },
            None => StoreUpdate::Delete {
                seq: pos.seq,
                chat_uid: uid.to_owned(),
            },
        };
        self.store.apply(vec![update]).expect("store apply");
    }

    /// Records generated chats `indexes`, flushing after every `flush_every` of them.
    async fn record_generated(
        &self,
        gen: &chatvault_gen::Generator,
        indexes: std::ops::Range<u64>,
        flush_every: Option<u64>,
    ) {
        for i in indexes {
            let doc = gen.chat(i);
            let uid = doc["ChatHeader"]["ChatUID"]
                .as_str()
                .expect("uid")
                .to_owned();
            let site = doc["ChatHeader"]["SiteKey"].as_i64().expect("site") as i32;
            self.record(&uid, site, Some(&doc)).await;
            if flush_every.is_some_and(|n| (i + 1) % n == 0) {
                self.store.flush().await.expect("flush");
            }
        }
    }

    /// A crash: the buffer is lost, the archive and catalog survive.
    async fn restart(&mut self) {
        let (archive, _) = Archive::open(ArchiveConfig::new(self.dir.path().join("archive")))
            .expect("reopen archive");
        self.archive = archive;
        self.store = Store::open(
            store_config(self.dir.path(), self.rebuild_hold_bytes),
            self.catalog.clone(),
        )
        .await
        .expect("reopen store");
        self.store
            .recover(&self.dir.path().join("archive"), &|_| {})
            .await
            .expect("recover");
    }
}

fn store_config(dir: &Path, rebuild_hold_bytes: usize) -> StoreConfig {
    StoreConfig {
        compact_min_files: 3,
        // Recoveries flush partway too.
        replay_flush_chats: 5,
        rebuild_hold_bytes,
        ..StoreConfig::new(dir.join("store"))
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        chat: u8,
        revision: u8,
        move_month: bool,
    },
    Delete {
        chat: u8,
    },
    Flush,
    Compact {
        full: bool,
    },
    Restart,
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..5, 0u8..4, any::<bool>()).prop_map(|(chat, revision, move_month)| Op::Upsert { chat, revision, move_month }),
        2 => (0u8..5).prop_map(|chat| Op::Delete { chat }),
        2 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|full| Op::Compact { full }),
        1 => Just(Op::Restart),
        1 => Just(Op::Rebuild),
    ]
}

fn document(chat: u8, revision: u8, move_month: bool) -> serde_json::Value {
    let mut doc = chatvault_gen::Generator::new(99).chat(u64::from(chat));
    doc["ChatHeader"]["Summary"] = serde_json::Value::String(format!("revision {revision}"));
    if let Some(lines) = doc["Lines"].as_array_mut() {
        lines.truncate(2 + usize::from(revision));
    }
    doc["ChatHeader"]["Tags"] =
        serde_json::json!((0..revision).map(|t| format!("t{t}")).collect::<Vec<_>>());
    if move_month {
        doc["ChatHeader"]["Started"] =
            serde_json::Value::String(format!("2023-0{}-15T10:00:00", 1 + revision % 9));
    }
    doc
}

/// (Summary, line count, tag count) per current chat, as the store shows it.
fn observed(store: &Store) -> BTreeMap<String, (String, u32, u32)> {
    let chats = store
        .scan("Chats", &ScanFilter::default())
        .expect("scan")
        .select([col("ChatUID"), col("Summary")])
        .collect()
        .expect("collect");
    let count = |table: &str| -> BTreeMap<String, u32> {
        let df = store
            .scan(table, &ScanFilter::default())
            .expect("scan")
            .group_by([col("ChatUID")])
            .agg([len().alias("n")])
            .collect()
            .expect("collect");
        let uids = df
            .column("ChatUID")
            .expect("uid")
            .str()
            .expect("str")
            .clone();
        let n = df.column("n").expect("n").u32().expect("u32").clone();
        uids.iter()
            .zip(n.iter())
            .filter_map(|(u, n)| Some((u?.to_owned(), n?)))
            .collect()
    };
    let lines = count("ChatLines");
    let tags = count("ChatTags");
    let uids = chats
        .column("ChatUID")
        .expect("uid")
        .str()
        .expect("str")
        .clone();
    let summaries = chats
        .column("Summary")
        .expect("summary")
        .str()
        .expect("str")
        .clone();
    let mut out = BTreeMap::new();
    for (uid, summary) in uids.iter().zip(summaries.iter()) {
        let uid = uid.expect("uid").to_owned();
        let previous = out.insert(
            uid.clone(),
            (
                summary.unwrap_or_default().to_owned(),
                lines.get(&uid).copied().unwrap_or(0),
                tags.get(&uid).copied().unwrap_or(0),
            ),
        );
        assert!(previous.is_none(), "chat {uid} appears twice in Chats");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn every_table_matches_a_plain_model_through_flushes_compactions_restarts_and_rebuilds(
        ops in proptest::collection::vec(op(), 1..30),
        // A rebuild within the default memory budget, or one that writes every row it
        // converts at once (nothing fits in zero bytes).
        rebuild_within_budget in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut h = if rebuild_within_budget { Harness::new().await } else { Harness::holding(0).await };
            let mut model: BTreeMap<String, (String, u32, u32)> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Upsert { chat, revision, move_month } => {
                        let doc = document(*chat, *revision, *move_month);
                        let uid = doc["ChatHeader"]["ChatUID"].as_str().expect("uid").to_owned();
                        let unchanged = h.catalog.chat(&uid).await.expect("lookup").is_some_and(|s| !s.deleted && s.content_hash == content_hash(&doc));
                        if !unchanged {
                            let site = doc["ChatHeader"]["SiteKey"].as_i64().expect("site") as i32;
                            h.record(&uid, site, Some(&doc)).await;
                        }
                        let lines = doc["Lines"].as_array().map_or(0, Vec::len) as u32;
                        model.insert(uid, (format!("revision {revision}"), lines, u32::from(*revision)));
                    }
                    Op::Delete { chat } => {
                        let uid = chatvault_gen::Generator::new(99).chat_uid(u64::from(*chat));
                        if let Some(state) = h.catalog.chat(&uid).await.expect("lookup").filter(|s| !s.deleted) {
                            h.record(&uid, state.site_key as i32, None).await;
                        }
                        model.remove(&uid);
                    }
                    Op::Flush => { h.store.flush().await.expect("flush"); }
                    Op::Compact { full } => { h.store.compact(*full).await.expect("compact"); }
                    Op::Restart => h.restart().await,
                    Op::Rebuild => {
                        let archive_dir = h.dir.path().join("archive");
                        h.store.rebuild(&archive_dir, &|_| {}).await.expect("rebuild");
                    }
                }
                let seen = observed(&h.store);
                prop_assert_eq!(&seen, &model, "after {:?}", op);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_site_one_month_query_opens_only_that_partition() {
    let h = Harness::new().await;
    h.record_generated(&chatvault_gen::Generator::new(5), 0..600, Some(200))
        .await;
    let chat_files = h.store.file_count();
    let filter = ScanFilter {
        sites: Some(vec![3]),
        started_from: chrono::NaiveDate::from_ymd_opt(2024, 8, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
        started_before: chrono::NaiveDate::from_ymd_opt(2024, 9, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
    };
    let predicate = || {
        col("SiteKey")
            .eq(lit(3))
            .and(col("Started").gt_eq(lit(NaiveDateLit("2024-08-01"))))
            .and(col("Started").lt(lit(NaiveDateLit("2024-09-01"))))
    };
    let before = h.store.files_opened();
    let pruned = h
        .store
        .scan("Chats", &filter)
        .expect("scan")
        .filter(predicate())
        .select([col("ChatUID")])
        .sort(["ChatUID"], Default::default())
        .collect()
        .expect("collect");
    let opened = h.store.files_opened() - before;
    // Three flushes, each wrote at most one Chats file for this partition.
    assert!(
        (1..=3).contains(&opened),
        "opened {opened} of {chat_files} files"
    );
    let everything = h
        .store
        .scan("Chats", &ScanFilter::default())
        .expect("scan")
        .filter(predicate())
        .select([col("ChatUID")])
        .sort(["ChatUID"], Default::default())
        .collect()
        .expect("collect");
    assert!(pruned.height() > 0, "the sample partition is empty");
    assert!(pruned.equals(&everything), "pruning changed the answer");
    assert!(
        h.store.files_opened() - before - opened > opened * 10,
        "a full scan must open many more files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_whole_store_throughout_a_rebuild() {
    let h = Harness::new().await;
    let chats = 1500;
    h.record_generated(&chatvault_gen::Generator::new(9), 0..chats, None)
        .await;
    h.store.flush().await.expect("flush");
    let count = |store: &Store| {
        store
            .scan("Chats", &ScanFilter::default())
            .expect("scan")
            .select([col("ChatUID")])
            .collect()
            .expect("collect")
            .height()
    };
    assert_eq!(count(&h.store), chats as usize);
    let store = h.store.clone();
    let archive_dir = h.dir.path().join("archive");
    // The rebuild writes its files as it goes: readers must see none of them until it
    // registers them all.
    let rebuild = tokio::spawn(async move {
        let progress = |_: u64| {};
        store.rebuild(&archive_dir, &progress).await
    });
    let mut observed = Vec::new();
    while !rebuild.is_finished() {
        let reader = h.store.clone();
        observed.push(
            tokio::task::spawn_blocking(move || count(&reader))
                .await
                .expect("join"),
        );
    }
    assert_eq!(rebuild.await.expect("join").expect("rebuild"), chats);
    assert!(!observed.is_empty(), "no read happened during the rebuild");
    assert!(
        observed.iter().all(|n| *n == chats as usize),
        "a reader saw a partial store during the rebuild: {:?}",
        observed
            .iter()
            .filter(|n| **n != chats as usize)
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&h.store), chats as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_writes_only_final_versions_one_file_per_table_and_partition() {
    let mut h = Harness::new().await;
    let mut model = BTreeMap::new();
    let uid_of = |doc: &serde_json::Value| {
        doc["ChatHeader"]["ChatUID"]
            .as_str()
            .expect("uid")
            .to_owned()
    };
    let site_of =
        |doc: &serde_json::Value| doc["ChatHeader"]["SiteKey"].as_i64().expect("site") as i32;
    // Six chats, new versions of three (one moving to another month), two deleted, and the
    // archive ending in a delete.
    for (chat, revision) in (0..6u8).map(|c| (c, 0u8)).chain((0..3).map(|c| (c, 2))) {
        let doc = document(chat, revision, chat == 2 && revision > 0);
        let lines = doc["Lines"].as_array().map_or(0, Vec::len) as u32;
        model.insert(
            uid_of(&doc),
            (format!("revision {revision}"), lines, u32::from(revision)),
        );
        h.record(&uid_of(&doc), site_of(&doc), Some(&doc)).await;
    }
    for chat in [3u8, 4] {
        let doc = document(chat, 0, false);
        model.remove(&uid_of(&doc));
        h.record(&uid_of(&doc), site_of(&doc), None).await;
    }
    let archive_dir = h.dir.path().join("archive");
    assert_eq!(
        h.store
            .rebuild(&archive_dir, &|_| {})
            .await
            .expect("rebuild"),
        11
    );
    assert_eq!(observed(&h.store), model);
    let snapshot = h.catalog.store_snapshot().await.expect("registry");
    assert!(
        snapshot.deletes.is_empty(),
        "hide entries: {:?}",
        snapshot.deletes
    );
    let mut partitions: Vec<_> = snapshot
        .files
        .iter()
        .map(|f| (f.table.clone(), f.site_key, f.month.clone()))
        .collect();
    let files = partitions.len();
    partitions.sort();
    partitions.dedup();
    assert_eq!(partitions.len(), files, "{:?}", snapshot.files);
    let chat_rows: i64 = snapshot
        .files
        .iter()
        .filter(|f| f.table == "Chats")
        .map(|f| f.rows)
        .sum();
    assert_eq!(
        chat_rows,
        model.len() as i64,
        "superseded or deleted rows were written"
    );
    // The watermark is past the last record, a delete that wrote no row, so a restart
    // has nothing to replay.
    let next_seq = h
        .catalog
        .store_snapshot()
        .await
        .expect("registry")
        .flushed_seq;
    assert_eq!(
        next_seq,
        h.archive
            .stats()
            .next_seq
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    h.restart().await;
    assert_eq!(observed(&h.store), model);
}

/// Every Parquet file under the store directory, outside the trash.
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("_trash") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_planned_before_a_compaction_still_reads_the_replaced_files() {
    let mut h = Harness::new().await;
    let gen = chatvault_gen::Generator::new(4);
    h.record_generated(&gen, 0..300, Some(100)).await;
    let planned = h
        .store
        .scan("Chats", &ScanFilter::default())
        .expect("scan")
        .select([col("ChatUID")]);
    let before = h.store.file_count();
    h.store.compact(true).await.expect("compact");
    assert!(h.store.file_count() < before, "nothing was compacted");
    let rows = planned
        .collect()
        .expect("the replaced files are still readable");
    assert_eq!(rows.height(), 300);

    // Without readers to wait for, replaced files go at once: what is on disk is what
    // the registry lists.
    h.store = Store::open(
        StoreConfig {
            retired_file_grace: std::time::Duration::ZERO,
            ..store_config(h.dir.path(), h.rebuild_hold_bytes)
        },
        h.catalog.clone(),
    )
    .await
    .expect("reopen");
    h.record_generated(&gen, 300..400, None).await;
    h.store.flush().await.expect("flush");
    h.store.compact(true).await.expect("compact");
    let registered = h.catalog.store_snapshot().await.expect("snapshot");
    assert_eq!(
        parquet_files(&h.dir.path().join("store")).len(),
        registered.files.len() + registered.deletes.len()
    );
}

/// Every table as readers see it, rows in key order.
fn every_table(store: &Store) -> Vec<DataFrame> {
    chatvault_model::TABLES
        .iter()
        .map(|table| {
            store
                .scan(table.name, &ScanFilter::default())
                .expect("scan")
                .sort(table.keys.to_vec(), SortMultipleOptions::default())
                .collect()
                .expect("collect")
        })
        .collect()
}

/// Tables from [`every_table`] before and after `step`, compared table by table.
fn assert_same_tables(before: &[DataFrame], after: &[DataFrame], step: &str) {
    for ((table, before), after) in chatvault_model::TABLES.iter().zip(before).zip(after) {
        assert!(
            before.equals_missing(after),
            "{} changed in {step}",
            table.name
        );
    }
}

/// (column chunks, of which dictionary-encoded) over every Parquet file under `dir`.
fn column_chunks_on_disk(dir: &Path) -> (usize, usize) {
    let (mut chunks, mut dictionary) = (0, 0);
    for path in parquet_files(dir) {
        let file = std::fs::File::open(&path).expect("open");
        let mut reader = ParquetReader::new(file);
        let meta = reader.get_metadata().expect("footer");
        for column in meta.row_groups.iter().flat_map(|g| g.parquet_columns()) {
            chunks += 1;
            dictionary += usize::from(column.dictionary_page_offset().is_some());
        }
    }
    (chunks, dictionary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_and_merged_files_read_back_exactly_what_was_buffered() {
    let h = Harness::new().await;
    let gen = chatvault_gen::Generator::new(11);
    h.record_generated(&gen, 0..300, None).await;
    let buffered = every_table(&h.store);
    assert!(
        buffered.iter().all(|df| df.height() > 0),
        "a table is empty"
    );
    let store_dir = h.dir.path().join("store");

    h.store.flush().await.expect("flush");
    let (chunks, dictionary) = column_chunks_on_disk(&store_dir);
    assert!(chunks > 0, "the flush wrote nothing");
    // A flush's files skip polars' per-column dictionary decision.
    assert_eq!(
        dictionary, 0,
        "a flush file has a dictionary-encoded column"
    );
    assert_same_tables(&buffered, &every_table(&h.store), "the flush");

    h.record_generated(&gen, 300..600, Some(150)).await;
    let buffered = every_table(&h.store);
    h.store.compact(true).await.expect("compact");
    let (_, dictionary) = column_chunks_on_disk(&store_dir);
    assert!(dictionary > 0, "no merged file kept a dictionary");
    assert_same_tables(&buffered, &every_table(&h.store), "the merge");
}

struct NaiveDateLit(&'static str);

impl Literal for NaiveDateLit {
    fn lit(self) -> Expr {
        let date = chrono::NaiveDate::parse_from_str(self.0, "%Y-%m-%d")
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("midnight");
        lit(date.and_utc().timestamp_micros())
            .cast(DataType::Datetime(TimeUnit::Microseconds, None))
    }
}

#[tokio::test]
async fn a_zstd_level_outside_zstds_range_is_refused_when_the_store_opens() {
    let h = Harness::new().await;
    for level in [0, 23] {
        let opened = Store::open(
            StoreConfig {
                zstd_level: level,
                ..store_config(h.dir.path(), h.rebuild_hold_bytes)
            },
            h.catalog.clone(),
        )
        .await;
        match opened {
            Err(e @ StoreError::ZstdLevel { .. }) => {
                assert!(
                    e.to_string().contains(&format!("zstd_level {level}")),
                    "{e}"
                )
            }
            Err(e) => panic!("level {level}: another error: {e}"),
            Ok(_) => panic!("level {level} was accepted"),
        }
    }
}
