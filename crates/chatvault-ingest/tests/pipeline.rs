//! The pipeline's ordering: exclusive work runs after what was queued before it, with
//! the archive rolled and nothing committed while it runs; a batch is decided against
//! the batches before it even while those are still being indexed.

use chatvault_archive::{read_records, Archive, ArchiveConfig, Source};
use chatvault_catalog::Catalog;
use chatvault_ingest::{prepare_one, OutcomeKind, Pipeline, PipelineConfig};
use chatvault_model::{content_hash, SchemaRegistry};
use chatvault_store::{Store, StoreConfig};
use std::time::Duration;

async fn start(dir: &std::path::Path, config: PipelineConfig) -> (Pipeline, Catalog) {
    let (pipeline, catalog, _) = start_with(dir, config, StoreConfig::new(dir.join("store"))).await;
    (pipeline, catalog)
}

async fn start_with(
    dir: &std::path::Path,
    config: PipelineConfig,
    store: StoreConfig,
) -> (Pipeline, Catalog, Store) {
    let catalog = Catalog::connect(&format!("sqlite://{}", dir.join("catalog.db").display()))
        .await
        .expect("catalog");
    let (archive, _) = Archive::open(ArchiveConfig::new(dir.join("archive"))).expect("archive");
    let store = Store::open(store, catalog.clone()).await.expect("store");
    let pipeline = Pipeline::start(archive, catalog.clone(), store.clone(), config);
    (pipeline, catalog, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_work_runs_between_batches_on_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_dir = dir.path().join("archive");
    let (pipeline, _) = start(dir.path(), PipelineConfig::default()).await;
    let registry = SchemaRegistry::new(1 << 20).expect("schemas");
    let gen = chatvault_gen::Generator::new(21);
    let submit = |i: u64| {
        let bytes = serde_json::to_vec(&gen.chat(i)).expect("json");
        let item = prepare_one(&registry, "", bytes.into(), "test");
        let pipeline = pipeline.clone();
        async move { pipeline.enqueue(Source::Import, vec![item]).await }
    };

    let mut before = Vec::new();
    for i in 0..20 {
        before.push(submit(i).await.expect("enqueue"));
    }
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let job_dir = archive_dir.clone();
    let job = tokio::spawn({
        let pipeline = pipeline.clone();
        async move {
            pipeline
                .exclusive(move || {
                    Box::pin(async move {
                        // Everything queued before is durable, and in closed segments.
                        let records = read_records(&job_dir, 0).expect("read").count();
                        let segments = std::fs::read_dir(&job_dir)
                            .expect("archive dir")
                            .flatten()
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".avro"))
                            .count();
                        let _ = started_tx.send((records, segments));
                        let _ = release_rx.await;
                        records
                    })
                })
                .await
        }
    });
    let (records_seen, segments_seen) = started_rx.await.expect("job started");
    assert_eq!(
        records_seen, 20,
        "the job ran before earlier submissions were durable"
    );
    assert_eq!(segments_seen, 2, "the open segment was not rolled");

    // Submitted while the job runs: queued, not committed.
    let during = submit(20).await.expect("enqueue");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_records(&archive_dir, 0).expect("read").count(), 20);
    release_tx.send(()).expect("release");
    assert_eq!(job.await.expect("join").expect("exclusive"), 20);
    let outcome = during.wait().await.expect("committed after the job");
    assert_eq!(outcome[0].status, OutcomeKind::Accepted);
    assert_eq!(outcome[0].seq, Some(20));
    for pending in before {
        let outcome = pending.wait().await.expect("outcome");
        assert_eq!(outcome[0].status, OutcomeKind::Accepted);
    }
}

/// One document per batch, queued without waiting: each batch is decided while the one
/// before it may still be on its way into the catalog, and must see it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_batches_see_each_others_decisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = PipelineConfig {
        max_batch_documents: 1,
        ..PipelineConfig::default()
    };
    let (pipeline, catalog) = start(dir.path(), config).await;
    let registry = SchemaRegistry::new(1 << 20).expect("schemas");
    let gen = chatvault_gen::Generator::new(5);
    let first = gen.chat(0);
    let mut second = first.clone();
    let rating = if first["ChatHeader"]["Rating"] == 1 {
        2
    } else {
        1
    };
    second["ChatHeader"]["Rating"] = serde_json::json!(rating);
    assert_ne!(content_hash(&first), content_hash(&second));
    let uid = gen.chat_uid(0);
    let upsert = |doc: &serde_json::Value| {
        let bytes = serde_json::to_vec(doc).expect("json");
        prepare_one(&registry, "", bytes.into(), "test")
    };
    let delete = || chatvault_ingest::Prepared::Delete {
        chat_uid: uid.clone(),
        detail: "test".into(),
        if_version: None,
    };
    let mut queued = Vec::new();
    for _round in 0..20 {
        for item in [
            upsert(&first),
            upsert(&second),
            upsert(&second),
            delete(),
            delete(),
        ] {
            queued.push(
                pipeline
                    .enqueue(Source::Import, vec![item])
                    .await
                    .expect("enqueue"),
            );
        }
    }
    let mut statuses = Vec::new();
    for pending in queued {
        let outcome = pending.wait().await.expect("outcome");
        statuses.push((outcome[0].status, outcome[0].version));
    }
    let mut expected = Vec::new();
    for round in 0..20i64 {
        let v = round * 3;
        expected.extend([
            (
                if round == 0 {
                    OutcomeKind::Accepted
                } else {
                    OutcomeKind::Updated
                },
                Some(v + 1),
            ),
            (OutcomeKind::Updated, Some(v + 2)),
            (OutcomeKind::Unchanged, Some(v + 2)),
            (OutcomeKind::Deleted, Some(v + 3)),
            (OutcomeKind::Unchanged, Some(v + 3)),
        ]);
    }
    assert_eq!(statuses, expected);
    let found = catalog.lookup(&[uid.as_str()]).await.expect("lookup");
    let state = &found[&uid];
    assert_eq!((state.version, state.deleted), (60, true));
    assert_eq!(
        read_records(&dir.path().join("archive"), 0)
            .expect("read")
            .count(),
        60
    );
}

/// With no flusher keeping up (here: none at all), ingest writes the store's buffer
/// itself once it holds three flushes' worth, rather than letting it grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_buffer_that_is_not_flushed_holds_ingest_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_config = StoreConfig {
        flush_chats: 10,
        ..StoreConfig::new(dir.path().join("store"))
    };
    let (pipeline, _, store) =
        start_with(dir.path(), PipelineConfig::default(), store_config).await;
    let registry = SchemaRegistry::new(1 << 20).expect("schemas");
    let gen = chatvault_gen::Generator::new(8);
    let mut most = 0;
    for batch in 0..20u64 {
        let items = (batch * 5..batch * 5 + 5)
            .map(|i| {
                let bytes = serde_json::to_vec(&gen.chat(i)).expect("json");
                prepare_one(&registry, "", bytes.into(), "test")
            })
            .collect();
        pipeline
            .submit(Source::Import, items)
            .await
            .expect("submit");
        most = most.max(store.buffered_chats());
    }
    assert!(store.file_count() > 0, "nothing was flushed");
    assert!(most < 30, "the buffer grew to {most} chats");
}
