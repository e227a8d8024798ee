//! The pipeline's exclusive work: ordered after what was queued before it, with the
//! archive rolled, and with nothing committed while it runs.

use chatvault_archive::{read_records, Archive, ArchiveConfig, Source};
use chatvault_catalog::Catalog;
use chatvault_ingest::{prepare_one, OutcomeKind, Pipeline, PipelineConfig};
use chatvault_model::SchemaRegistry;
use chatvault_store::{Store, StoreConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_work_runs_between_batches_on_closed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::connect(&format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ))
    .await
    .expect("catalog");
    let archive_dir = dir.path().join("archive");
    let (archive, _) = Archive::open(ArchiveConfig::new(&archive_dir)).expect("archive");
    let store = Store::open(StoreConfig::new(dir.path().join("store")), catalog.clone())
        .await
        .expect("store");
    let pipeline = Pipeline::start(archive, catalog, store, PipelineConfig::default());
    let registry = SchemaRegistry::new(1 << 20).expect("schemas");
    let gen = chatvault_gen::Generator::new(21);
    let submit = |i: u64| {
        let bytes = serde_json::to_vec(&gen.chat(i)).expect("json");
        let item = prepare_one(&registry, "", &bytes, "test");
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
