//! `chatvault backup` while `serve` takes documents, then `chatvault restore`: the copy
//! verifies, and holds every chat acknowledged before the backup began, the keys, the
//! holds and the audit log.

mod common;

use common::{client, run, Server};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The ChatUIDs the Chats set holds, by `chatvault export`.
fn chat_uids(data_dir: &Path) -> BTreeSet<String> {
    let (code, out, err) = run(
        &["export", "Chats", "--select", "ChatUID", "--out", "-"],
        data_dir,
    );
    assert_eq!(code, 0, "export failed: {err}");
    out.lines()
        .skip(1)
        .map(|line| line.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_to_a_copy_that_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, backup, restored) = (
        dir.path().join("live"),
        dir.path().join("backup"),
        dir.path().join("restored"),
    );
    let chats = dir.path().join("chats.ndjson");
    let (code, _, err) = run(
        &[
            "gen",
            "--chats",
            "300",
            "--seed",
            "5",
            "--out",
            chats.to_str().expect("utf-8"),
        ],
        &live,
    );
    assert_eq!(code, 0, "gen: {err}");
    let (code, _, err) = run(&["import", chats.to_str().expect("utf-8")], &live);
    assert_eq!(code, 0, "import: {err}");
    let imported = chat_uids(&live);
    assert_eq!(imported.len(), 300);
    let held = imported.iter().next().cloned().expect("a chat");
    let (code, _, err) = run(
        &["hold", "place", "--chat", &held, "--reason", "matter 7"],
        &live,
    );
    assert_eq!(code, 0, "hold: {err}");
    let (code, _, err) = run(&["digest", "export"], &live);
    assert_eq!(code, 0, "digest: {err}");

    let server = Server::start(&live, &[]);
    let key = server
        .first_key
        .clone()
        .expect("the first serve prints a key");

    // Documents keep arriving over the webhook while the backup is taken.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (url, key) = (server.url("/api/v1/chats"), key.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        tokio::spawn(async move {
            let generator = chatvault_gen::Generator::new(77);
            let http = client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let doc = generator.chat(n);
                n += 1;
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&doc)
                    .send()
                    .await
                    .expect("post");
                assert!(response.status().is_success(), "{}", response.status());
                let uid = doc["ChatHeader"]["ChatUID"]
                    .as_str()
                    .expect("uid")
                    .to_owned();
                acknowledged.lock().expect("lock").push(uid);
            }
        })
    };
    while acknowledged.lock().expect("lock").len() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before_backup: Vec<String> = acknowledged.lock().expect("lock").clone();
    let (code, out, err) = {
        let (live, backup) = (live.clone(), backup.clone());
        tokio::task::spawn_blocking(move || {
            run(
                &["backup", "--out", backup.to_str().expect("utf-8"), "--json"],
                &live,
            )
        })
        .await
        .expect("backup thread")
    };
    stop.store(true, Ordering::Relaxed);
    sender.await.expect("sender");
    assert_eq!(code, 0, "backup: {err}");
    let summary: Value = serde_json::from_str(&out).expect("backup summary");
    assert!(summary["files"].as_u64().unwrap_or(0) >= 3, "{summary}");
    drop(server);

    let (code, out, err) = run(
        &[
            "restore",
            "--from",
            backup.to_str().expect("utf-8"),
            "--json",
        ],
        &restored,
    );
    assert_eq!(code, 0, "restore: {err}");
    let summary: Value = serde_json::from_str(&out).expect("restore summary");
    assert!(summary["chats"].as_u64().unwrap_or(0) >= 320, "{summary}");

    let (code, out, err) = run(&["verify"], &restored);
    assert_eq!(code, 0, "verify of the restored copy: {out}{err}");
    assert!(out.contains("verify: OK"), "{out}");
    let (code, out, err) = run(&["audit", "verify"], &restored);
    assert_eq!(code, 0, "audit verify of the restored copy: {out}{err}");

    let restored_uids = chat_uids(&restored);
    let missing: Vec<&String> = imported
        .iter()
        .chain(&before_backup)
        .filter(|uid| !restored_uids.contains(*uid))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, not restored: {missing:?}"
    );

    let (code, out, err) = run(&["hold", "list", "--json"], &restored);
    assert_eq!(code, 0, "hold list: {err}");
    assert!(out.contains(&held) && out.contains("matter 7"), "{out}");
    assert!(
        std::fs::read_dir(restored.join("digests"))
            .expect("digests")
            .count()
            >= 1,
        "the signed digests are restored"
    );

    // The restored copy serves, to the key the original had.
    let server = Server::start(&restored, &[]);
    let (chats, _) = common::chat_counts(&server, &key).await;
    assert_eq!(chats, restored_uids.len() as u64);

    // A damaged backup restores nothing, and says which file.
    let segment = std::fs::read_dir(backup.join("archive"))
        .expect("archive")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).expect("damage");
    let elsewhere = dir.path().join("elsewhere");
    let (code, _, err) = run(
        &["restore", "--from", backup.to_str().expect("utf-8")],
        &elsewhere,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("damaged") && err.contains("archive/segment-"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);
}
