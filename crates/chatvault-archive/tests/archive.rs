use chatvault_archive::{
    read_records, replay_final_versions, verify, Archive, ArchiveConfig, Entry, Operation,
    Position, Source,
};
use chatvault_model::ContentHash;
use proptest::prelude::*;
use std::io::Write;
use std::sync::atomic::Ordering;

fn entry(i: u64, doc_len: usize) -> Entry {
    Entry {
        received_at_us: 1_700_000_000_000_000 + i as i64,
        source: if i.is_multiple_of(2) {
            Source::Webhook
        } else {
            Source::Folder
        },
        source_detail: format!("test/{i}"),
        chat_uid: format!("{i:024x}"),
        site_key: (i % 5) as i64,
        operation: if i % 7 == 3 {
            Operation::Delete
        } else {
            Operation::Upsert
        },
        schema_version: 1,
        content_hash: ContentHash([i as u8; 32]),
        document: vec![b'x'; doc_len],
    }
}

fn all_records(dir: &std::path::Path) -> Vec<(u64, Entry)> {
    read_records(dir, 0)
        .expect("readable")
        .map(|r| r.map(|r| (r.seq, r.entry)).expect("record"))
        .collect()
}

#[tokio::test]
async fn appended_records_read_back_in_order_with_their_sequence_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, report) = Archive::open(ArchiveConfig::new(dir.path())).expect("open");
    assert_eq!(report.next_seq, 0);
    let seqs: Vec<u64> = archive
        .append((0..10).map(|i| entry(i, 100)).collect())
        .await
        .expect("append")
        .iter()
        .map(|p| p.seq)
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let more = archive.append(vec![entry(10, 5)]).await.expect("append");
    assert_eq!((more[0].seq, more[0].segment), (10, 0));
    let back = all_records(dir.path());
    assert_eq!(back.len(), 11);
    for (i, (seq, e)) in back.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(*e, entry(i as u64, if i == 10 { 5 } else { 100 }));
    }
    let from_seven: Vec<u64> = read_records(dir.path(), 7)
        .expect("read")
        .map(|r| r.expect("ok").seq)
        .collect();
    assert_eq!(from_seven, vec![7, 8, 9, 10]);
}

#[tokio::test]
async fn final_versions_are_each_chats_last_record_newest_segment_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ArchiveConfig {
        segment_max_bytes: 1024,
        ..ArchiveConfig::new(dir.path())
    };
    let (archive, _) = Archive::open(config).expect("open");
    // Thirteen chats re-sent over many segments; every seventh record a delete, so some
    // chats end deleted and some are sent again after a delete.
    for i in 0..90u64 {
        let resent = Entry {
            chat_uid: format!("chat-{}", i % 13),
            document: format!("document {i} {}", "x".repeat(300)).into_bytes(),
            ..entry(i, 0)
        };
        archive.append(vec![resent]).await.expect("append");
    }
    drop(archive);
    let all: Vec<chatvault_archive::Record> = read_records(dir.path(), 0)
        .expect("readable")
        .map(|r| r.expect("record"))
        .collect();
    let mut last = std::collections::HashMap::new();
    for record in &all {
        last.insert(record.entry.chat_uid.clone(), record);
    }
    let mut expected: Vec<&chatvault_archive::Record> = last
        .into_values()
        .filter(|r| r.entry.operation == Operation::Upsert)
        .collect();
    expected.sort_by_key(|r| (std::cmp::Reverse(r.segment), r.seq));
    let segments: std::collections::HashSet<u64> = expected.iter().map(|r| r.segment).collect();
    assert!(
        segments.len() > 2,
        "finals in {} segments only",
        segments.len()
    );
    assert!(expected.len() < 13, "no chat ends deleted");

    let (mut rx, reading) = replay_final_versions(dir.path().to_owned(), 2);
    let (mut finals, mut passed) = (Vec::new(), 0);
    while let Some(part) = rx.recv().await {
        let documents: Vec<(u64, Vec<u8>)> =
            part.documents().map(|(seq, d)| (seq, d.to_vec())).collect();
        assert!(documents.len() <= 2);
        passed += part.passed;
        finals.extend(documents);
    }
    let next_seq = reading.await.expect("join").expect("readable");
    let expected: Vec<(u64, Vec<u8>)> = expected
        .iter()
        .map(|r| (r.seq, r.entry.document.clone()))
        .collect();
    assert_eq!(finals, expected);
    assert_eq!(
        passed,
        all.len() as u64,
        "every record counts towards the progress"
    );
    assert_eq!(next_seq, Some(90));
}

#[tokio::test]
async fn an_empty_archive_has_no_final_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut rx, reading) = replay_final_versions(dir.path().to_owned(), 2);
    assert!(rx.recv().await.is_none());
    assert_eq!(reading.await.expect("join").expect("readable"), None);
}

/// `n` single-record appends of `size`-byte documents, all in flight at once; the
/// positions of all of them.
async fn append_concurrently(archive: &Archive, n: u64, size: usize) -> Vec<Position> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let archive = archive.clone();
            tokio::spawn(async move { archive.append(vec![entry(i, size)]).await })
        })
        .collect();
    let mut positions = Vec::new();
    for t in tasks {
        positions.extend(t.await.expect("join").expect("append"));
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, _) = Archive::open(ArchiveConfig::new(dir.path())).expect("open");
    let mut seqs: Vec<u64> = append_concurrently(&archive, 200, 2000)
        .await
        .iter()
        .map(|p| p.seq)
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..200).collect::<Vec<_>>(),
        "every append got a distinct seq"
    );
    let fsyncs = archive.stats().fsyncs.load(Ordering::Relaxed);
    assert!(
        fsyncs < 200,
        "200 concurrent appends took {fsyncs} fsyncs: no group commit"
    );
    assert_eq!(all_records(dir.path()).len(), 200);
}

#[tokio::test]
async fn segments_rotate_and_form_a_verified_hash_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ArchiveConfig {
        segment_max_bytes: 4096,
        ..ArchiveConfig::new(dir.path())
    };
    let (archive, _) = Archive::open(config.clone()).expect("open");
    for i in 0..20 {
        archive.append(vec![entry(i, 1000)]).await.expect("append");
    }
    drop(archive);
    // Reopening starts a new segment chained to the old ones.
    let (archive, report) = Archive::open(config).expect("reopen");
    assert_eq!(report.next_seq, 20);
    archive.append(vec![entry(20, 10)]).await.expect("append");
    let report = verify(dir.path()).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report.segments.len() >= 5,
        "expected rotation, got {} segments",
        report.segments.len()
    );
    assert_eq!(report.records, 21);
    assert_eq!(report.last_seq, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_closes_every_earlier_append_and_keeps_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, _) = Archive::open(ArchiveConfig::new(dir.path())).expect("open");
    // Appends queued before the roll are committed before it, whatever the batching.
    let positions = append_concurrently(&archive, 50, 300).await;
    let open = archive.roll().await.expect("roll");
    assert!(
        positions.iter().all(|p| p.segment < open),
        "every earlier append is in a closed segment"
    );
    // Rolling an open segment that holds nothing keeps it.
    assert_eq!(archive.roll().await.expect("roll again"), open);
    let after = archive.append(vec![entry(50, 10)]).await.expect("append");
    assert_eq!((after[0].seq, after[0].segment), (50, open));
    let report = verify(dir.path()).expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 51);
}

/// Six records in segments small enough that each holds one or two.
async fn small_segments() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ArchiveConfig {
        segment_max_bytes: 2048,
        ..ArchiveConfig::new(dir.path())
    };
    let (archive, _) = Archive::open(config).expect("open");
    for i in 0..6 {
        archive.append(vec![entry(i, 1500)]).await.expect("append");
    }
    dir
}

#[tokio::test]
async fn tampering_with_a_closed_segment_breaks_the_chain() {
    let dir = small_segments().await;
    let first = dir.path().join("segment-0000000000.avro");
    let mut bytes = std::fs::read(&first).expect("read");
    let last = bytes.len() - 40;
    bytes[last] ^= b'x' ^ b'y';
    std::fs::write(&first, bytes).expect("write");
    let report = verify(dir.path()).expect("verify");
    // The altered file is named, not the later segment whose header witnessed it.
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains("segment-0000000000.avro was altered")
            && report.problems[0].contains("segment-0000000001.avro recorded"),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_deleted_segment_is_named_with_the_records_it_held() {
    let dir = small_segments().await;
    let intact = verify(dir.path()).expect("verify");
    assert!(intact.ok() && intact.segments.len() >= 4, "{intact:?}");
    let first_seq = |n: usize| intact.segments[n].first_seq;
    std::fs::remove_file(dir.path().join("segment-0000000002.avro")).expect("remove");
    let report = verify(dir.path()).expect("verify");
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].ends_with("segment-0000000002.avro is missing"),
        "{:?}",
        report.problems
    );
    assert_eq!(
        report.problems[1],
        format!(
            "records seq {} to {} are missing with it",
            first_seq(2),
            first_seq(3) - 1
        )
    );
    std::fs::remove_file(dir.path().join("segment-0000000000.avro")).expect("remove");
    let report = verify(dir.path()).expect("verify");
    assert!(
        report.problems[0].ends_with("segment-0000000000.avro is missing")
            && report.problems[1]
                == format!("records seq 0 to {} are missing with it", first_seq(1) - 1),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_on_open_and_acknowledged_records_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ArchiveConfig::new(dir.path());
    let (archive, _) = Archive::open(config.clone()).expect("open");
    archive
        .append((0..3).map(|i| entry(i, 300)).collect())
        .await
        .expect("append");
    drop(archive);
    // Simulate a crash in the middle of writing a block: a count and size, then half the data.
    let seg = dir.path().join("segment-0000000000.avro");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&[2, 0xd0, 0x0f, b'x', b'x', b'x'])
        .expect("write");
    drop(f);
    let before = verify(dir.path()).expect("verify");
    assert!(before.ok() && before.torn_tail.is_some(), "{before:?}");
    let (archive, report) = Archive::open(config).expect("reopen");
    assert_eq!(report.truncated_bytes, 6);
    assert_eq!(report.next_seq, 3);
    archive.append(vec![entry(3, 1)]).await.expect("append");
    let after = verify(dir.path()).expect("verify");
    assert!(after.ok() && after.torn_tail.is_none(), "{after:?}");
    assert_eq!(all_records(dir.path()).len(), 4);
}

#[tokio::test]
async fn segments_are_standard_avro_that_a_stock_reader_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, _) = Archive::open(ArchiveConfig::new(dir.path())).expect("open");
    archive
        .append((0..4).map(|i| entry(i, 50)).collect())
        .await
        .expect("append");
    archive.append(vec![entry(4, 0)]).await.expect("append");
    let file = std::fs::File::open(dir.path().join("segment-0000000000.avro")).expect("open");
    let reader = apache_avro::Reader::new(file).expect("stock Avro reader accepts the header");
    let mut n = 0;
    for (i, value) in reader.enumerate() {
        let apache_avro::types::Value::Record(fields) = value.expect("record decodes") else {
            panic!("not a record");
        };
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("seq"), Some(apache_avro::types::Value::Long(i as i64)));
        assert_eq!(
            get("chat_uid"),
            Some(apache_avro::types::Value::String(
                entry(i as u64, 0).chat_uid
            ))
        );
        let expected_op = if i % 7 == 3 { "delete" } else { "upsert" };
        assert!(
            matches!(get("operation"), Some(apache_avro::types::Value::Enum(_, s)) if s == expected_op)
        );
        n += 1;
    }
    assert_eq!(n, 5);
}

fn header_len() -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Archive::open(ArchiveConfig::new(dir.path())).expect("open"));
    std::fs::metadata(dir.path().join("segment-0000000000.avro"))
        .expect("meta")
        .len()
}

#[test]
fn a_damaged_header_is_refused_not_silently_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Archive::open(ArchiveConfig::new(dir.path())).expect("open"));
    let seg = dir.path().join("segment-0000000000.avro");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(10)
        .expect("truncate");
    let err = Archive::open(ArchiveConfig::new(dir.path())).expect_err("must refuse");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    /// Cut the newest segment anywhere after its header: reopening keeps exactly the whole
    /// blocks before the cut, never a partial record, and the archive accepts writes again.
    #[test]
    fn any_truncation_recovers_a_prefix_of_whole_batches(batches in proptest::collection::vec(1usize..5, 1..6), cut_frac in 0.0f64..=1.0) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = ArchiveConfig::new(dir.path());
            let (archive, _) = Archive::open(config.clone()).expect("open");
            let mut i = 0u64;
            let mut ends = vec![0u64];
            for n in &batches {
                archive.append((0..*n).map(|_| { i += 1; entry(i - 1, 64) }).collect()).await.expect("append");
                ends.push(i);
            }
            drop(archive);
            let seg = dir.path().join("segment-0000000000.avro");
            let len = std::fs::metadata(&seg).expect("meta").len();
            let header = header_len();
            let cut = header + ((len - header) as f64 * cut_frac) as u64;
            std::fs::OpenOptions::new().write(true).open(&seg).expect("open").set_len(cut).expect("truncate");
            let (archive, _) = Archive::open(config.clone()).expect("reopen");
            archive.append(vec![entry(999, 1)]).await.expect("append after repair");
            let survivors = all_records(dir.path()).len() as u64 - 1;
            prop_assert!(ends.contains(&survivors), "recovered {} records, not a whole-batch prefix of {:?}", survivors, ends);
            if cut == len {
                prop_assert_eq!(survivors, i);
            }
            prop_assert!(verify(dir.path()).expect("verify").ok());
            Ok(())
        })?;
    }
}
