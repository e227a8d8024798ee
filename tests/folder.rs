//! The watched folder: files present at start, thousands arriving at once, files still
//! being written, re-delivered files, and a restart in between.

mod common;

use common::{chat_counts, Server};
use std::path::Path;
use std::time::{Duration, Instant};

fn config(dir: &Path, inbox: &Path) -> std::path::PathBuf {
    let config = dir.join("chatvault.toml");
    std::fs::write(
        &config,
        format!(
            "[folder]\npath = {:?}\nsettle_ms = 300\nrescan_secs = 1\n",
            inbox.display().to_string()
        ),
    )
    .expect("config");
    config
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
            .count()
    })
}

async fn wait_until_empty(inbox: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while files_in(inbox) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} files never left {}",
            files_in(inbox),
            inbox.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn thousands_of_files_at_once_plus_files_written_before_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    let data = dir.path().join("data");
    // Files written while the service was down are found by the start-up scan.
    let (code, _, err) = common::run(
        &[
            "gen",
            "--chats",
            "300",
            "--seed",
            "1",
            "--out",
            inbox.to_str().expect("utf8"),
        ],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let config = config(dir.path(), &inbox);
    let server = Server::start(
        &data,
        &[("CHATVAULT_CONFIG", config.to_str().expect("utf8"))],
    );
    let key = server.first_key.clone().expect("key");
    wait_until_empty(&inbox, Duration::from_secs(60)).await;
    assert_eq!(chat_counts(&server, &key).await.0, 300);

    // 3,000 files appear at once (generated elsewhere, moved in).
    let staging = dir.path().join("staging");
    let (code, _, err) = common::run(
        &[
            "gen",
            "--chats",
            "3000",
            "--seed",
            "2",
            "--out",
            staging.to_str().expect("utf8"),
        ],
        &data.join("unused"),
    );
    assert_eq!(code, 0, "{err}");
    for entry in std::fs::read_dir(&staging).expect("staging") {
        let path = entry.expect("entry").path();
        std::fs::rename(&path, inbox.join(path.file_name().expect("name"))).expect("move in");
    }
    wait_until_empty(&inbox, Duration::from_secs(180)).await;
    assert_eq!(chat_counts(&server, &key).await.0, 3300);
    assert_eq!(files_in(&inbox.join("processed")), 3300);
    assert_eq!(files_in(&inbox.join("rejected")), 0);

    // The chat server re-delivers a file it already sent: unchanged, moved aside, no new version.
    let again = inbox
        .join("processed")
        .read_dir()
        .expect("processed")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    std::fs::copy(&again, inbox.join(again.file_name().expect("name"))).expect("copy");
    wait_until_empty(&inbox, Duration::from_secs(30)).await;
    assert_eq!(chat_counts(&server, &key).await.0, 3300);
    assert_eq!(
        files_in(&inbox.join("processed")),
        3301,
        "the repeat lands beside the original under a new name"
    );
}

#[tokio::test]
async fn a_file_still_being_written_is_not_taken_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let config = config(dir.path(), &inbox);
    let server = Server::start(
        &dir.path().join("data"),
        &[("CHATVAULT_CONFIG", config.to_str().expect("utf8"))],
    );
    let key = server.first_key.clone().expect("key");
    let doc = common::read_sample("answered-with-surveys.json");
    let (first, second) = doc.split_at(doc.len() / 2);
    let path = inbox.join("slow-writer.json");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(first).expect("write");
        f.sync_all().expect("sync");
        // Pause for less than the settle time, as a slow producer would, then finish.
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(second).expect("write");
    }
    wait_until_empty(&inbox, Duration::from_secs(30)).await;
    assert!(
        inbox.join("processed/slow-writer.json").is_file(),
        "the complete file must be accepted, not rejected half-written"
    );
    assert_eq!(chat_counts(&server, &key).await.0, 1);

    // Hidden files (a producer's temporary name) are left alone until renamed into place.
    std::fs::write(inbox.join(".partial.json"), &doc[..100]).expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        inbox.join(".partial.json").is_file(),
        "hidden files are never taken or moved"
    );
}
