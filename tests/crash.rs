//! Crash safety: a server ingesting over HTTP at load is killed with SIGKILL at random
//! moments. After every restart, every acknowledged document is in the archive exactly
//! once, acknowledged documents re-sent come back `unchanged`, and `chatvault verify`
//! passes. Rounds: CHATVAULT_CRASH_ROUNDS (default 20); seed: CHATVAULT_CRASH_SEED.

mod common;

use chatvault_archive::{read_records, Operation};
use chatvault_model::{content_hash, ContentHash};
use common::{client, Server};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLIENTS: u64 = 8;

#[derive(Default)]
struct Ledger {
    /// Every (ChatUID, content hash) the server acknowledged.
    acked: HashMap<(String, ContentHash), u32>,
    /// Acknowledged documents that are never modified, safe to re-send.
    resendable: Vec<Value>,
    /// Re-sends of acknowledged documents that were not answered `unchanged`.
    violations: Vec<String>,
}

fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

async fn client_loop(
    base: String,
    key: String,
    round: u64,
    id: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let gen = chatvault_gen::Generator::new(seed);
    let http = client();
    let mut rng = seed ^ (round << 32) ^ id;
    let mut k = 0u64;
    let mut revision = 0u64;
    let mut mutable: Option<Value> = None;
    while !stop.load(Ordering::Relaxed) {
        let batch_len = 1 + next(&mut rng) % 4;
        let mut batch = Vec::new();
        let mut resends = Vec::new();
        for _ in 0..batch_len {
            let dice = next(&mut rng) % 10;
            if dice < 2 {
                // A new revision of this client's mutable chat (a missed chat followed up).
                let doc = mutable
                    .get_or_insert_with(|| gen.chat(round * 1_000_000 + id * 100_000 + 99_999));
                revision += 1;
                doc["ChatHeader"]["Summary"] =
                    Value::String(format!("revision {revision} of round {round}"));
                batch.push(doc.clone());
            } else if dice < 3 {
                let old = ledger.lock().ok().and_then(|l| {
                    (!l.resendable.is_empty())
                        .then(|| l.resendable[next(&mut rng) as usize % l.resendable.len()].clone())
                });
                if let Some(old) = old {
                    resends.push(batch.len());
                    batch.push(old);
                }
            } else {
                batch.push(gen.chat(round * 1_000_000 + id * 100_000 + k));
                k += 1;
            }
        }
        // A re-send drawn before anything was acknowledged adds nothing; an empty array
        // is (rightly) refused, so there is nothing to send this time.
        if batch.is_empty() {
            continue;
        }
        let response = http
            .post(format!("{base}/api/v1/chats"))
            .bearer_auth(&key)
            .json(&batch)
            .send()
            .await;
        let Ok(response) = response else { return };
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            continue;
        }
        let status = response.status();
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let results = body["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), batch.len());
        let Ok(mut ledger) = ledger.lock() else {
            return;
        };
        for (i, (doc, result)) in batch.iter().zip(results).enumerate() {
            let uid = doc["ChatHeader"]["ChatUID"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let status = result["status"].as_str().unwrap_or_default().to_owned();
            *ledger
                .acked
                .entry((uid.clone(), content_hash(doc)))
                .or_default() += 1;
            if resends.contains(&i) {
                if status != "unchanged" {
                    ledger.violations.push(format!(
                        "round {round}: re-sent acknowledged chat {uid} came back {status}"
                    ));
                }
            } else if doc["ChatHeader"]["Summary"]
                .as_str()
                .is_some_and(|s| !s.starts_with("revision"))
                && status == "accepted"
            {
                ledger.resendable.push(doc.clone());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged_and_duplicates_nothing() {
    let rounds: u64 = std::env::var("CHATVAULT_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CHATVAULT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("crash test: {rounds} rounds, CHATVAULT_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = common::create_key(dir.path(), "ingest", None);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = seed;
    for round in 0..rounds {
        let server = Server::start(dir.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client_loop(
                    server.base.clone(),
                    key.clone(),
                    round,
                    id,
                    seed,
                    stop.clone(),
                    ledger.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + next(&mut rng) % 650)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client task");
        }
        let (code, out, err) = common::run(&["verify"], dir.path());
        assert_eq!(
            code, 0,
            "round {round}: verify failed after SIGKILL (seed {seed}):\n{out}\n{err}"
        );
    }

    let ledger = ledger.lock().expect("ledger");
    assert!(
        ledger.violations.is_empty(),
        "seed {seed}: {:?}",
        ledger.violations
    );
    assert!(
        ledger.acked.len() > 100,
        "too little load to mean anything: {} acknowledged",
        ledger.acked.len()
    );
    let mut stored: HashMap<(String, ContentHash), u32> = HashMap::new();
    for record in read_records(&dir.path().join("archive"), 0).expect("archive") {
        let record = record.expect("record");
        if record.entry.operation == Operation::Upsert {
            *stored
                .entry((record.entry.chat_uid, record.entry.content_hash))
                .or_default() += 1;
        }
    }
    for (doc, _) in ledger.acked.iter() {
        assert_eq!(
            stored.get(doc).copied().unwrap_or(0),
            1,
            "seed {seed}: acknowledged chat {} stored {} times",
            doc.0,
            stored.get(doc).copied().unwrap_or(0)
        );
    }
    let duplicates: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "seed {seed}: stored more than once: {duplicates:?}"
    );
    eprintln!(
        "crash test: {} documents acknowledged, {} versions stored",
        ledger.acked.len(),
        stored.len()
    );
}
