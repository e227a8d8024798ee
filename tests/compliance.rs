//! Compliance end to end: the audit log over HTTP and the CLI; `verify` and signed
//! digests naming each kind of tampering.

mod common;

use common::{client, create_key, read_sample, run, Server};
use serde_json::Value;
use std::path::Path;

async fn audit_page(server: &Server, key: &str, query: &str) -> (u16, Value) {
    let response = client()
        .get(server.url(&format!("/api/v1/audit{query}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("audit request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("audit json"))
}

#[tokio::test]
async fn key_changes_and_deletes_are_audited_and_the_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let admin = server.first_key.clone().expect("first start prints a key");
    let reader = create_key(dir.path(), "read", Some("1"));
    let (code, out, err) = run(&["keys", "list"], dir.path());
    assert_eq!(code, 0, "{err}");
    let reader_id = out
        .lines()
        .filter(|l| l.contains("read"))
        .find_map(|l| l.split_whitespace().next())
        .expect("reader id")
        .to_owned();
    // A read key is known but may not read the audit log; the server now trusts it for
    // a few seconds without asking the catalog again.
    let (status, _) = audit_page(&server, &reader, "").await;
    assert_eq!(status, 403, "a read key may not read the audit log");
    let (code, _, err) = run(&["keys", "revoke", &reader_id], dir.path());
    assert_eq!(code, 0, "{err}");
    let revoked = std::time::Instant::now();
    loop {
        let (status, _) = audit_page(&server, &reader, "").await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 403, "a key is either still trusted or refused");
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(7),
            "a revoked key was still accepted 7 s later (the server trusts a key for 5 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let http = client();
    let doc: Value = serde_json::from_slice(&read_sample("missed-followed-up.json")).expect("json");
    let uid = doc["ChatHeader"]["ChatUID"]
        .as_str()
        .expect("uid")
        .to_owned();
    let posted = http
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&admin)
        .json(&doc)
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 200);
    let deleted = http
        .delete(server.url(&format!("/api/v1/chats/{uid}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);

    let (status, page) = audit_page(&server, &admin, "").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().expect("entries");
    // `serve` signs a digest as it starts, concurrently with the requests above.
    let (digests, entries): (Vec<&Value>, Vec<&Value>) =
        entries.iter().partition(|e| e["action"] == "digest.export");
    assert_eq!(digests.len(), 1, "{page}");
    assert_eq!(digests[0]["actor"], "service");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let admin_id = &admin[..11];
    assert_eq!(
        actions,
        [
            ("key.create", admin_id),
            ("key.create", reader_id.as_str()),
            ("key.revoke", reader_id.as_str()),
            ("chat.delete", uid.as_str()),
        ]
    );
    let delete = entries[3];
    assert_eq!(delete["address"], "127.0.0.1");
    assert!(
        delete["actor"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("key:{admin_id}")),
        "{delete}"
    );
    assert_eq!(delete["detail"]["status"], "deleted");
    assert!(entries[1]["actor"]
        .as_str()
        .unwrap_or("")
        .starts_with("cli:"));
    // Secrets never reach the log.
    assert!(
        !page.to_string().contains(&admin),
        "the admin secret leaked into the audit log"
    );

    // Paging and filtering.
    let (_, keys_only) = audit_page(&server, &admin, "?action=key&after=0&limit=1").await;
    assert_eq!(keys_only["entries"][0]["action"], "key.create");
    assert_eq!(keys_only["entries"][0]["target"], reader_id.as_str());
    assert_eq!(keys_only["next_after"], entries[1]["seq"]);
    let (_, last) = audit_page(&server, &admin, "?action=chat").await;
    assert_eq!(last["entries"].as_array().map(Vec::len), Some(1));
    assert!(last.get("next_after").is_none(), "{last}");

    // The digest `serve` wrote at start checks out against the data.
    let mut written = Vec::new();
    for _ in 0..100 {
        written = std::fs::read_dir(dir.path().join("digests"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        if !written.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(written.len(), 1, "{written:?}");
    let (code, out, err) = run(
        &["verify-digest", written[0].to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");

    // Only admins read the log.
    let ingest = create_key(dir.path(), "ingest", None);
    let (status, body) = audit_page(&server, &ingest, "").await;
    assert_eq!(status, 403, "{body}");

    // Legal holds over the admin API, audited like the rest.
    let holds = server.url("/api/v1/holds");
    let placed = http
        .post(&holds)
        .bearer_auth(&admin)
        .json(&serde_json::json!({"site_key": 3, "from_date": "2024-01-01", "reason": "matter 9"}))
        .send()
        .await
        .expect("place");
    assert_eq!(placed.status(), 201);
    let placed: Value = placed.json().await.expect("json");
    let hold_id = placed["id"].as_str().expect("id").to_owned();
    assert_eq!(placed["scope"]["site"]["site_key"], 3, "{placed}");
    for bad in [
        serde_json::json!({"site_key": 3, "email": "a@b.c", "reason": "two scopes"}),
        serde_json::json!({"site_key": 3, "from_date": "01/02/2024", "reason": "bad date"}),
        serde_json::json!({"chat_uid": uid, "reason": " "}),
    ] {
        let refused = http
            .post(&holds)
            .bearer_auth(&admin)
            .json(&bad)
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 400, "{bad}");
    }
    let refused = http
        .post(&holds)
        .bearer_auth(&ingest)
        .json(&serde_json::json!({"chat_uid": uid, "reason": "x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 403);
    let listed: Value = http
        .get(&holds)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let release = format!("{holds}/{hold_id}");
    let released = http
        .delete(&release)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("release");
    assert_eq!(released.status(), 200);
    let again = http
        .delete(&release)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("release");
    assert_eq!(again.status(), 409);
    let listed: Value = http
        .get(&holds)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
    let all: Value = http
        .get(format!("{holds}?all=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        all[0]["released_by"]
            .as_str()
            .map(|a| a.starts_with("key:")),
        Some(true),
        "{all}"
    );
    let (_, hold_audit) = audit_page(&server, &admin, "?action=hold").await;
    let hold_actions: Vec<&str> = hold_audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(hold_actions, ["hold.place", "hold.release"]);

    let (code, out, err) = run(&["audit", "verify"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Audit log: 8 entries"), "{out}");
    let (code, out, _) = run(&["audit", "list", "--action", "chat"], dir.path());
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(&uid), "{out}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn problems(data_dir: &Path) -> Vec<String> {
    let (code, out, err) = run(&["verify", "--json"], data_dir);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let problems: Vec<String> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    assert_eq!(code == 0, problems.is_empty(), "{out}");
    problems
}

fn assert_named(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {problems:#?}"
    );
}

/// (public key, digest path) from `digest export`.
fn export_digest(data_dir: &Path) -> (String, String) {
    let (code, out, err) = run(&["digest", "export"], data_dir);
    assert_eq!(code, 0, "{out}{err}");
    let key = err
        .split("public key ")
        .nth(1)
        .expect("public key printed")
        .trim()
        .to_owned();
    (key, out.trim().to_owned())
}

fn verify_digest(data_dir: &Path, digest: &str, key: &str) -> (i32, String) {
    let (code, out, err) = run(&["verify-digest", digest, "--public-key", key], data_dir);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn verify_and_digests_name_a_flipped_byte_a_deleted_segment_and_an_edited_catalog_row() {
    let base = tempfile::tempdir().expect("tempdir");
    let good = base.path().join("good");
    // One import per segment: every start of the archive begins a new segment.
    for sample in [
        "answered-with-surveys.json",
        "bot-then-transfer.json",
        "translated-german.json",
    ] {
        let path = common::samples().join(sample);
        let (code, out, err) = run(&["import", path.to_str().expect("utf-8")], &good);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert_eq!(problems(&good), Vec::<String>::new());
    let (key, digest) = export_digest(&good);
    let (code, out) = verify_digest(&good, &digest, &key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signature valid; 4 segments checked"), "{out}");

    // One byte flipped inside a document of the first segment.
    let flipped = base.path().join("flipped");
    copy_dir(&good, &flipped);
    let segment = flipped.join("archive/segment-0000000000.avro");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let at = bytes
        .windows(6)
        .position(|w| w == b"volume")
        .expect("the summary text is in the segment");
    bytes[at + 1] ^= 1;
    std::fs::write(&segment, bytes).expect("write");
    let found = problems(&flipped);
    assert_named(&found, "segment-0000000000.avro was altered");
    assert_named(
        &found,
        "segment 0 record seq 0 (chat 6741a0c2e4b0a1f3c2d4e501): the document does not match its recorded content hash",
    );
    let (code, out) = verify_digest(&flipped, &digest, &key);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("segment-0000000000.avro changed since the digest"),
        "{out}"
    );

    // A whole segment deleted.
    let deleted = base.path().join("deleted");
    copy_dir(&good, &deleted);
    std::fs::remove_file(deleted.join("archive/segment-0000000001.avro")).expect("remove");
    let found = problems(&deleted);
    assert_named(&found, "segment-0000000001.avro is missing");
    assert_named(&found, "records seq 1 to 1 are missing with it");
    assert_named(
        &found,
        "catalog row for chat 6741a0c2e4b0a1f3c2d4e503 points at archive seq 1 in segment 1, which the archive does not hold",
    );
    let (code, out) = verify_digest(&deleted, &digest, &key);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("segment-0000000001.avro is missing (the digest lists it)"),
        "{out}"
    );

    // A catalog row edited behind the service's back.
    let edited = base.path().join("edited");
    copy_dir(&good, &edited);
    let url = format!("sqlite://{}", edited.join("catalog.db").display());
    let catalog = chatvault_catalog::Catalog::connect_raw(&url)
        .await
        .expect("catalog");
    catalog
        .execute_raw(&format!(
            "UPDATE chats SET content_hash = '{}' WHERE chat_uid = '6741a0c2e4b0a1f3c2d4e504'",
            "ab".repeat(32)
        ))
        .await
        .expect("edit");
    catalog.close().await;
    let found = problems(&edited);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_named(
        &found,
        &format!(
            "catalog row for chat 6741a0c2e4b0a1f3c2d4e504 disagrees with the archive: content_hash {}",
            "ab".repeat(32)
        ),
    );

    // A digest signed by another key, or altered, is refused.
    let (code, out) = verify_digest(&good, &digest, &"00".repeat(32));
    assert_eq!(code, 1, "{out}");
    let mut altered: Value =
        serde_json::from_slice(&std::fs::read(&digest).expect("digest")).expect("json");
    altered["digest"]["records"] = Value::from(2);
    let altered_path = base.path().join("altered.json");
    std::fs::write(&altered_path, altered.to_string()).expect("write");
    let (code, out) = verify_digest(&good, altered_path.to_str().expect("utf-8"), &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature INVALID"), "{out}");
}

const OKAFOR: &str = "6741a0c2e4b0a1f3c2d4e501";
const OKAFOR_HELD: &str = "6741a0c2e4b0a1f3c2d4e505";

fn fixture(name: &str) -> String {
    common::fixtures()
        .join("compliance")
        .join(name)
        .to_str()
        .expect("utf-8")
        .to_owned()
}

fn import(data_dir: &Path, paths: &[&str]) {
    let mut args = vec!["import"];
    args.extend(paths);
    let (code, out, err) = run(&args, data_dir);
    assert_eq!(code, 0, "{out}{err}");
}

/// Segment number → whether its bytes mention the visitor (any case of "okafor").
fn mentions_okafor(data_dir: &Path) -> Vec<(String, bool)> {
    segments_mentioning(data_dir, b"okafor")
}

/// The erased visitor's own address, which generated chats never hold (their visitors
/// may be called Okafor too).
const OKAFOR_EMAIL: &[u8] = b"d.okafor@example.org";

/// Segment number → whether its bytes hold `marker` (lowercase) in any case.
fn segments_mentioning(data_dir: &Path, marker: &[u8]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(data_dir.join("archive"))
        .expect("archive")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".avro"))
        .map(|e| {
            let bytes = std::fs::read(e.path())
                .expect("segment")
                .to_ascii_lowercase();
            let found = bytes.windows(marker.len()).any(|w| w == marker);
            (e.file_name().to_string_lossy().into_owned(), found)
        })
        .collect();
    out.sort();
    out
}

/// Two versions of Daniel Okafor's first chat in two segments, his second chat in a
/// third, and someone else's chat beside it.
fn import_okafor_chats(data: &Path) {
    import(data, &[&sample("answered-with-surveys.json")]);
    import(data, &[&fixture("okafor-update.json")]);
    import(
        data,
        &[
            &fixture("okafor-second-chat.json"),
            &sample("bot-then-transfer.json"),
        ],
    );
}

fn verify_json(data_dir: &Path) -> Value {
    let (code, out, err) = run(&["verify", "--json"], data_dir);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).expect("verify json")
}

#[tokio::test]
async fn erasure_reaches_archive_catalog_and_store_and_spares_held_chats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    import_okafor_chats(data);
    let before = mentions_okafor(data);
    assert_eq!(before.iter().filter(|(_, f)| *f).count(), 3, "{before:?}");

    let (code, hold, err) = run(
        &[
            "hold",
            "place",
            "--chat",
            OKAFOR_HELD,
            "--reason",
            "matter 2024-117",
        ],
        data,
    );
    assert_eq!(code, 0, "{err}");
    let hold = hold.trim().to_owned();
    let (_, listed, _) = run(&["hold", "list"], data);
    assert!(
        listed.contains(&hold) && listed.contains("matter 2024-117"),
        "{listed}"
    );

    // Legal export: every version of every chat of the person, holds included.
    let out_dir = dir.path().join("legal");
    let (code, out, err) = run(
        &[
            "legal-export",
            "--email",
            "d.okafor@example.org",
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
        data,
    );
    assert_eq!(code, 0, "{out}{err}");
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("bundle.json")).expect("bundle"))
            .expect("json");
    let chats = bundle["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 2, "{bundle}");
    assert_eq!(chats[0]["chat_uid"], OKAFOR);
    assert_eq!(chats[0]["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        chats[0]["versions"][1]["document"]["ChatHeader"]["Summary"],
        "Visitor asked for volume pricing; quote emailed; follow-up call booked."
    );
    assert_eq!(chats[1]["chat_uid"], OKAFOR_HELD);
    assert_eq!(chats[1]["holds"][0]["id"], hold.as_str());
    let html = std::fs::read_to_string(out_dir.join("transcript.html")).expect("html");
    assert!(
        html.contains("<h2>Chat 6741a0c2e4b0a1f3c2d4e501</h2>"),
        "{html}"
    );
    assert!(html.contains("<td>Daniel Okafor</td>"), "{html}");
    assert!(html.contains("Under legal hold"), "{html}");

    // A dry run says what would happen and changes nothing.
    let (code, out, err) = run(
        &[
            "erase",
            "--email",
            "d.okafor@example.org",
            "--dry-run",
            "--json",
        ],
        data,
    );
    assert_eq!(code, 0, "{out}{err}");
    let plan: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(plan["plan"]["chats"], serde_json::json!([OKAFOR]));
    assert_eq!(plan["plan"]["held"][OKAFOR_HELD], serde_json::json!([hold]));
    assert!(plan["receipt"].is_null());
    assert_eq!(mentions_okafor(data).iter().filter(|(_, f)| *f).count(), 3);

    let (code, out, err) = run(
        &["erase", "--email", "D.Okafor@EXAMPLE.org", "--json"],
        data,
    );
    assert_eq!(code, 0, "{out}{err}");
    let done: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["receipt"]["chats"], 1);
    assert_eq!(done["receipt"]["held"], 1);
    assert_eq!(done["receipt"]["segments"], 2);
    assert_eq!(done["receipt"]["records"], 2);
    // Archive: only the held chat's segment still names the person.
    let after = mentions_okafor(data);
    assert_eq!(
        after
            .iter()
            .filter(|(_, f)| *f)
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["segment-0000000002.avro"],
        "{after:?}"
    );
    // verify passes: rewritten segments are re-linked and receipted; the catalog shows
    // the chat deleted and the store no longer holds it.
    let report = verify_json(data);
    assert_eq!(report["deleted_chats"], 1, "{report}");
    // The receipts say what, when and who, never the address searched for.
    let (_, audit, _) = run(&["audit", "list"], data);
    assert!(audit.contains("erasure.apply"), "{audit}");
    assert_eq!(audit.matches("archive.rewrite").count(), 2, "{audit}");
    assert!(!audit.to_ascii_lowercase().contains("okafor"), "{audit}");
    assert!(
        audit.contains("hold.place") && audit.contains("export.legal"),
        "{audit}"
    );
    // Erasing again finds nothing more to do.
    let (code, out, _) = run(
        &["erase", "--email", "d.okafor@example.org", "--json"],
        data,
    );
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(again["receipt"]["segments"], 0, "{again}");

    // Once the hold is released, the held chat can be erased too.
    let (code, _, err) = run(&["hold", "release", &hold], data);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["erase", "--chat", OKAFOR_HELD, "--json"], data);
    assert_eq!(code, 0, "{out}{err}");
    assert!(mentions_okafor(data).iter().all(|(_, f)| !f));
    let report = verify_json(data);
    assert_eq!(report["deleted_chats"], 2, "{report}");

    // A rewritten segment changed afterwards is caught even though its notes still
    // re-link the chain: no receipt names its new hash.
    let segment = data.join("archive/segment-0000000000.avro");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&segment, bytes).expect("write");
    let found = problems(data);
    assert_named(
        &found,
        "segment 0 was changed after its last erasure rewrite",
    );
}

#[tokio::test]
async fn a_kill_during_erasure_leaves_each_segment_old_or_new_and_verify_passes() {
    let base = tempfile::tempdir().expect("tempdir");
    let prepared = base.path().join("prepared");
    // Enough data that the rewrite and the store rebuild take a moment to kill into.
    for (seed, person) in [
        ("1", common::samples().join("answered-with-surveys.json")),
        (
            "2",
            common::fixtures().join("compliance/okafor-update.json"),
        ),
        (
            "3",
            common::fixtures().join("compliance/okafor-second-chat.json"),
        ),
    ] {
        let chats = base.path().join(format!("gen-{seed}.ndjson"));
        let (code, _, err) = run(
            &[
                "gen",
                "--chats",
                "1500",
                "--seed",
                seed,
                "--out",
                chats.to_str().expect("utf-8"),
            ],
            &prepared,
        );
        assert_eq!(code, 0, "{err}");
        import(
            &prepared,
            &[
                chats.to_str().expect("utf-8"),
                person.to_str().expect("utf-8"),
            ],
        );
    }
    let before = segments_mentioning(&prepared, OKAFOR_EMAIL);
    assert!(
        before.iter().all(|(_, found)| *found),
        "every segment should hold the visitor's address before the erasure: {before:?}"
    );
    let originals: Vec<(String, Vec<u8>)> = before
        .into_iter()
        .map(|(name, _)| {
            let bytes = std::fs::read(prepared.join("archive").join(&name)).expect("read");
            (name, bytes)
        })
        .collect();

    for (round, delay_ms) in [40u64, 150, 400, 900].into_iter().enumerate() {
        let data = base.path().join(format!("round-{round}"));
        copy_dir(&prepared, &data);
        let mut child = std::process::Command::new(common::BIN)
            .args(["erase", "--email", "d.okafor@example.org", "--data-dir"])
            .arg(&data)
            .env_remove("CHATVAULT_CONFIG")
            .env("CHATVAULT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn erase");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();

        // Straight after the kill: every segment is whole, and each is either exactly
        // the old file or a rewrite without the person in it.
        let archive = chatvault_archive::verify(&data.join("archive")).expect("verify");
        assert!(
            archive.ok() && archive.torn_tail.is_none(),
            "round {round}: {archive:?}"
        );
        for (name, original) in &originals {
            let now = std::fs::read(data.join("archive").join(name)).expect("segment");
            let rewritten = !now
                .to_ascii_lowercase()
                .windows(OKAFOR_EMAIL.len())
                .any(|w| w == OKAFOR_EMAIL);
            assert!(
                now == *original || rewritten,
                "round {round}: {name} is neither the old file nor a clean rewrite"
            );
        }
        // Opening finishes an interrupted erasure; verify then passes.
        let report = verify_json(&data);
        let journal = data.join("erasure.journal");
        assert!(!journal.exists(), "round {round}: journal left behind");
        let erased = segments_mentioning(&data, OKAFOR_EMAIL)
            .iter()
            .all(|(_, f)| !f);
        let untouched = originals.iter().all(|(name, original)| {
            std::fs::read(data.join("archive").join(name)).is_ok_and(|b| b == *original)
        });
        assert!(
            erased || untouched,
            "round {round}: erasure neither finished nor absent: {report}"
        );
        if erased {
            assert_eq!(report["deleted_chats"], 2, "round {round}: {report}");
        }
    }
}

/// ChatUID → (records, records still holding a document) in the archive.
fn archived(data_dir: &Path) -> std::collections::BTreeMap<String, (usize, usize)> {
    let mut out = std::collections::BTreeMap::new();
    for record in chatvault_archive::read_records(&data_dir.join("archive"), 0).expect("read") {
        let record = record.expect("record");
        let e: &mut (usize, usize) = out.entry(record.entry.chat_uid).or_default();
        e.0 += 1;
        e.1 += usize::from(!record.entry.document.is_empty());
    }
    out
}

fn sample(name: &str) -> String {
    common::samples()
        .join(name)
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// The site 3 sample in one segment, then the two site 5 samples (September 2024) in the
/// next.
fn import_three_sites(data: &Path) {
    import(data, &[&sample("answered-with-surveys.json")]);
    import(
        data,
        &[
            &sample("bot-then-transfer.json"),
            &sample("translated-german.json"),
        ],
    );
}

/// Holds site 5's chats started on 2024-09-03 (the translated German chat); its id.
fn hold_site_5_on_3_september(data_dir: &Path) -> String {
    let (code, hold, err) = run(
        &[
            "hold",
            "place",
            "--site",
            "5",
            "--from",
            "2024-09-03",
            "--to",
            "2024-09-03",
            "--reason",
            "audit 9",
        ],
        data_dir,
    );
    assert_eq!(code, 0, "{err}");
    hold.trim().to_owned()
}

#[tokio::test]
async fn retention_deletes_expired_chats_per_site_and_keeps_held_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    import_three_sites(&data);
    // Site 5's chats (September 2024) are past a year; site 3 keeps chats for a century.
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        "[retention]\ndefault_days = 365\n\n[retention.sites]\n\"3\" = 36500\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let hold = hold_site_5_on_3_september(&data);

    let (code, out, err) = run(
        &[
            "--config",
            config,
            "retention",
            "apply",
            "--dry-run",
            "--json",
        ],
        &data,
    );
    assert_eq!(code, 0, "{out}{err}");
    let plan: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        plan["plan"]["chats"],
        serde_json::json!(["6741a0c2e4b0a1f3c2d4e503"])
    );
    assert_eq!(
        plan["plan"]["held"]["6741a0c2e4b0a1f3c2d4e504"],
        serde_json::json!([hold])
    );
    assert_eq!(archived(&data)["6741a0c2e4b0a1f3c2d4e503"], (1, 1));

    let (code, out, err) = run(&["--config", config, "retention", "apply", "--json"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let done: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["receipt"]["chats"], 1, "{done}");
    let after = archived(&data);
    assert_eq!(
        after["6741a0c2e4b0a1f3c2d4e503"],
        (1, 0),
        "expired chat emptied"
    );
    assert_eq!(after["6741a0c2e4b0a1f3c2d4e504"], (1, 1), "held chat kept");
    assert_eq!(
        after["6741a0c2e4b0a1f3c2d4e501"],
        (1, 1),
        "site 3 keeps its chats"
    );
    let report = verify_json(&data);
    assert_eq!(report["deleted_chats"], 1, "{report}");
    let (_, audit, _) = run(&["audit", "list", "--action", "retention"], &data);
    assert!(audit.contains("retention.apply"), "{audit}");
}

#[tokio::test]
async fn redaction_on_ingest_keeps_ips_and_card_numbers_out_of_every_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        "[ingest.redact]\ndrop_ip = true\nmask_card_numbers = true\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let doc = fixture("card-in-message.json");
    let (code, out, err) = run(&["--config", config, "import", &doc, "--json"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let record = chatvault_archive::read_records(&data.join("archive"), 0)
        .expect("read")
        .map(|r| r.expect("record"))
        .find(|r| r.entry.chat_uid == "6741a0c2e4b0a1f3c2d4e506")
        .expect("archived");
    let text = String::from_utf8(record.entry.document.clone()).expect("utf-8");
    assert!(text.contains("**** **** **** 1111"), "{text}");
    assert!(!text.contains("4111 1111"), "{text}");
    let stored: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(stored["ChatHeader"]["IP"], "");
    // The archived hash is the redacted document's, so the original sent again is a repeat.
    assert_eq!(
        record.entry.content_hash,
        chatvault_model::content_hash(&stored)
    );
    let (code, out, err) = run(&["--config", config, "import", &doc, "--json"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let again: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(again["summary"]["counts"]["unchanged"], 1, "{again}");
    verify_json(&data);
    // Without redaction the same document is stored as sent.
    let plain = dir.path().join("plain");
    import(&plain, &[&doc]);
    let text: Vec<u8> = chatvault_archive::read_records(&plain.join("archive"), 0)
        .expect("read")
        .map(|r| r.expect("record").entry.document)
        .next()
        .expect("one record");
    assert!(String::from_utf8_lossy(&text).contains("4111 1111 1111 1111"));
}

#[tokio::test]
async fn retention_can_anonymise_instead_of_deleting_per_site_and_keeps_held_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    import(
        &data,
        &[
            &sample("answered-with-surveys.json"),
            &sample("bot-then-transfer.json"),
            &sample("translated-german.json"),
        ],
    );
    // Everything expires; by default chats are anonymised (names and free text only),
    // site 3's are deleted; site 5's chat of 2024-09-03 is held.
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        "[retention]\ndefault_days = 30\naction = \"anonymise\"\nanonymise_fields = [\"names\", \"text\"]\n\n\
         [retention.site_actions.\"3\"]\naction = \"delete\"\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    hold_site_5_on_3_september(&data);
    let bot = "6741a0c2e4b0a1f3c2d4e503";

    let (code, out, err) = run(
        &["--config", config, "retention", "apply", "--dry-run"],
        &data,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Would anonymise 1") && out.contains(&format!("{bot} (names, text)")),
        "{out}"
    );
    assert!(out.contains("Would delete 1"), "{out}");
    let before = archived(&data);
    assert_eq!(before[bot], (1, 1), "a dry run changes nothing");

    let (code, out, err) = run(&["--config", config, "retention", "apply", "--json"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let done: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["receipt"]["chats"], 1, "{done}");
    assert_eq!(done["receipt"]["anonymised"], 1, "{done}");
    // The archive keeps the chat as an upsert, masked, with the masked document's hash.
    let record = chatvault_archive::read_records(&data.join("archive"), 0)
        .expect("read")
        .map(|r| r.expect("record"))
        .find(|r| r.entry.chat_uid == bot)
        .expect("archived");
    assert_eq!(record.entry.operation, chatvault_archive::Operation::Upsert);
    let doc: Value = serde_json::from_slice(&record.entry.document).expect("json");
    assert_eq!(
        record.entry.content_hash,
        chatvault_model::content_hash(&doc)
    );
    assert_eq!(doc["ChatHeader"]["Name"], "[anonymised]");
    assert_eq!(doc["Lines"][1]["Message"], "[anonymised]");
    assert_eq!(doc["PostChatSurvey"][0]["Value"], "5", "ratings stay");
    assert_eq!(
        doc["ChatHeader"]["IP"], "198.51.100.7",
        "IPs were not chosen"
    );
    assert_eq!(doc["ChatHeader"]["DurationSeconds"], 571);
    let text = String::from_utf8_lossy(&record.entry.document).into_owned();
    assert!(
        !text.contains("password reset") && !text.contains("\"Sam\""),
        "{text}"
    );
    // Catalog and store agree with the rewritten archive; only site 3's chat is deleted.
    let report = verify_json(&data);
    assert_eq!(report["deleted_chats"], 1, "{report}");
    // The store's rows for the chat are kept, masked.
    let csv = dir.path().join("lines.csv");
    let (code, out, err) = run(
        &[
            "export",
            "ChatLines",
            "--filter",
            &format!("ChatUID eq '{bot}'"),
            "--out",
            csv.to_str().expect("utf-8"),
        ],
        &data,
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines = std::fs::read_to_string(&csv).expect("csv");
    assert!(lines.contains("[anonymised]"), "{lines}");
    assert!(!lines.contains("password reset"), "{lines}");
    let (_, audit, _) = run(&["audit", "list"], &data);
    assert!(
        audit.contains("retention.apply") && audit.contains("archive.rewrite"),
        "{audit}"
    );
    // The held chat is untouched; a second run finds nothing left to do.
    assert_eq!(archived(&data)["6741a0c2e4b0a1f3c2d4e504"], (1, 1));
    let (code, out, err) = run(&["--config", config, "retention", "apply", "--json"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let again: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(again["plan"]["anonymise"], serde_json::json!({}), "{again}");
    assert_eq!(again["receipt"]["segments"], 0, "{again}");
}

/// `POST /api/v1/erasures` with `key`: (status, body).
async fn request_erasure(server: &Server, key: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(server.url("/api/v1/erasures"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("erasure request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn odata_status(server: &Server, key: &str, path: &str) -> u16 {
    client()
        .get(server.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("odata")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_over_the_admin_api_while_documents_keep_arriving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    import_okafor_chats(data);
    let server = Server::start(data, &[]);
    let admin = server.first_key.clone().expect("admin key");
    let reader = create_key(data, "read", None);

    let resp = client()
        .post(server.url("/api/v1/holds"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"chat_uid": OKAFOR_HELD, "reason": "matter 2024-117"}))
        .send()
        .await
        .expect("hold");
    assert_eq!(resp.status().as_u16(), 201);
    let hold: Value = resp.json().await.expect("hold json");
    let hold = hold["id"].as_str().expect("hold id").to_owned();

    // Refusals: not an admin, no selector, two selectors.
    let email = serde_json::json!({"email": "d.okafor@example.org"});
    assert_eq!(
        request_erasure(&server, &reader, email.clone()).await.0,
        403
    );
    let (status, body) = request_erasure(&server, &admin, serde_json::json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidErasure", "{body}");
    let both = serde_json::json!({"email": "d.okafor@example.org", "ip": "81.2.69.160"});
    assert_eq!(request_erasure(&server, &admin, both).await.0, 400);

    // A dry run shows the plan and changes nothing.
    let (status, plan) = request_erasure(
        &server,
        &admin,
        serde_json::json!({"email": "D.Okafor@example.org", "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["plan"]["chats"], serde_json::json!([OKAFOR]), "{plan}");
    assert_eq!(plan["plan"]["held"][OKAFOR_HELD], serde_json::json!([hold]));
    assert!(plan["receipt"].is_null(), "{plan}");
    let chat = format!("/odata/Chats('{OKAFOR}')");
    assert_eq!(odata_status(&server, &reader, &chat).await, 200);

    // Documents keep arriving over the webhook while the erasure runs; each one the
    // service acknowledges must be there afterwards.
    let sender = {
        let (url, key) = (server.url("/api/v1/chats"), admin.clone());
        tokio::spawn(async move {
            let gen = chatvault_gen::Generator::new(77);
            let mut acknowledged = Vec::new();
            for i in 0..120 {
                let doc = gen.chat(i);
                let resp = client()
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&doc)
                    .send()
                    .await
                    .expect("post");
                if resp.status().as_u16() == 200 {
                    let uid = doc["ChatHeader"]["ChatUID"].as_str().expect("uid");
                    acknowledged.push(uid.to_owned());
                }
            }
            acknowledged
        })
    };
    let (status, done) = request_erasure(&server, &admin, email).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["receipt"]["chats"], 1, "{done}");
    assert_eq!(done["receipt"]["held"], 1, "{done}");
    assert_eq!(done["receipt"]["segments"], 2, "{done}");
    let acknowledged = sender.await.expect("sender");
    assert!(
        acknowledged.len() > 100,
        "{} acknowledged",
        acknowledged.len()
    );

    // The erased chat is gone from the feed at once, the held one and every document
    // that arrived meanwhile are there.
    assert_eq!(odata_status(&server, &reader, &chat).await, 404);
    let held = format!("/odata/Chats('{OKAFOR_HELD}')");
    assert_eq!(odata_status(&server, &reader, &held).await, 200);
    for uid in &acknowledged {
        let path = format!("/odata/Chats('{uid}')");
        assert_eq!(odata_status(&server, &reader, &path).await, 200, "{uid}");
    }
    // The receipt is in the audit log with who asked and from where, never the address.
    let (_, page) = audit_page(&server, &admin, "?action=erasure").await;
    let entries = page["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["erasure.plan", "erasure.apply"], "{page}");
    assert!(entries[1]["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("key:")));
    assert_eq!(entries[1]["address"], "127.0.0.1");
    assert!(
        !page.to_string().to_ascii_lowercase().contains("okafor"),
        "{page}"
    );

    server.kill();
    // Segments 0 and 1 held only the erased chat's versions, segment 2 the held chat;
    // later segments hold generated chats (whose names may include Okafor).
    let after: Vec<bool> = mentions_okafor(data)[..3].iter().map(|(_, f)| *f).collect();
    assert_eq!(after, [false, false, true]);
    let report = verify_json(data);
    assert_eq!(report["deleted_chats"], 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_the_retention_policy_on_its_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    import_three_sites(&data);
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        "[retention]\nrun_every_secs = 1\ndefault_days = 365\n\n[retention.sites]\n\"3\" = 36500\n",
    )
    .expect("config");
    hold_site_5_on_3_september(&data);
    let server = Server::start(
        &data,
        &[("CHATVAULT_CONFIG", config.to_str().expect("utf-8"))],
    );
    let admin = server.first_key.clone().expect("admin key");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let applied = loop {
        let (_, page) = audit_page(&server, &admin, "?action=retention").await;
        if let Some(entry) = page["entries"].as_array().and_then(|e| e.first()).cloned() {
            break entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled retention run within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(applied["action"], "retention.apply", "{applied}");
    assert_eq!(applied["actor"], "scheduler", "{applied}");
    assert_eq!(applied["detail"]["chats"], 1, "{applied}");
    assert_eq!(applied["detail"]["held"], 1, "{applied}");
    for (uid, expected, why) in [
        ("6741a0c2e4b0a1f3c2d4e503", 404, "expired"),
        ("6741a0c2e4b0a1f3c2d4e504", 200, "held"),
        ("6741a0c2e4b0a1f3c2d4e501", 200, "site 3 keeps its chats"),
    ] {
        let path = format!("/odata/Chats('{uid}')");
        assert_eq!(
            odata_status(&server, &admin, &path).await,
            expected,
            "{why}"
        );
    }
    // Later runs find nothing more and leave no further receipts.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (_, page) = audit_page(&server, &admin, "?action=retention").await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1), "{page}");
    server.kill();
    let report = verify_json(&data);
    assert_eq!(report["deleted_chats"], 1, "{report}");
}
