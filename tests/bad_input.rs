//! The bad-input corpus: every input gets a clear 4xx or a `rejected/` file with a
//! reason, the process stays up, and nothing is stored.

mod common;

use common::{chat_counts, client, fixtures, read_sample, Server};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures().join("bad-input"))
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read"),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus is missing files");
    files
}

/// The reason a refusal gives, wherever it is in the body.
fn reason_of(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .or_else(|| body["results"][0]["error"]["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn webhook_refuses_every_bad_input_clearly_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let key = server.first_key.clone().expect("key");
    let post = |content_type: &'static str, encoding: Option<&'static str>, body: Vec<u8>| {
        let mut req = client()
            .post(server.url("/api/v1/chats"))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        async move {
            let resp = req
                .send()
                .await
                .expect("the server must answer, not drop the connection");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    for (name, bytes) in corpus() {
        let (status, body) = post("application/json", None, bytes).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {status} {body}"
        );
        assert!(
            reason_of(&body).len() > 10,
            "{name}: no clear reason in {body}"
        );
    }

    // Schema violations name the place in the document.
    let (_, body) = post(
        "application/json",
        None,
        std::fs::read(fixtures().join("bad-input/missing-chatuid.json")).expect("read"),
    )
    .await;
    assert_eq!(
        body["results"][0]["error"]["violations"][0]["pointer"],
        "/ChatHeader/ChatUID"
    );
    let (_, body) = post(
        "application/json",
        None,
        std::fs::read(fixtures().join("bad-input/wrong-types.json")).expect("read"),
    )
    .await;
    let pointers: Vec<&str> = body["results"][0]["error"]["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["pointer"].as_str())
        .collect();
    for expected in ["/ChatHeader/SiteKey", "/Lines", "/ChatHeader/Rating"] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {pointers:?}"
        );
    }

    // A 10 MB string: over the per-document limit.
    let mut doc: Value =
        serde_json::from_slice(&read_sample("answered-with-surveys.json")).expect("sample");
    doc["Lines"][0]["Message"] = Value::String("x".repeat(10 * 1024 * 1024));
    let (status, body) = post(
        "application/json",
        None,
        serde_json::to_vec(&doc).expect("json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reason_of(&body).contains("limit"), "{}", reason_of(&body));

    // 10,000-deep nesting inside an otherwise valid document.
    let deep = format!(
        r#"{{"ChatHeader":{{"ChatUID":"6741a0c2e4b0a1f3c2d4e5aa","SiteKey":1,"Started":"2024-01-01T00:00:00"}},"Lines":[],"X":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (status, body) = post("application/json", None, deep.into_bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reason_of(&body).contains("recursion"),
        "{}",
        reason_of(&body)
    );

    // A gzip bomb: 100 MB of spaces in about 100 KB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1024 * 1024];
    for _ in 0..100 {
        gz.write_all(&block).expect("gzip");
    }
    let (status, body) = post("application/json", Some("gzip"), gz.finish().expect("gzip")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Not gzip at all, though labelled so; and an unknown encoding.
    let (status, _) = post("application/json", Some("gzip"), b"plain text".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        "application/json",
        Some("br"),
        read_sample("answered-with-surveys.json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Wrong content types.
    for ct in ["text/plain", "application/xml", "multipart/form-data"] {
        let (status, body) = post(ct, None, read_sample("answered-with-surveys.json")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {body}");
    }

    // Path tricks on the delete route.
    for path in [
        "/api/v1/chats/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/chats/..",
        "/api/v1/chats/6741a0c2e4b0a1f3c2d4e5",
    ] {
        let resp = client()
            .delete(server.url(path))
            .bearer_auth(&key)
            .send()
            .await
            .expect("delete");
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
    }

    let health = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("still up");
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        chat_counts(&server, &key).await,
        (0, 0),
        "nothing may be stored"
    );
    drop(server);
    let (code, out, _) = common::run(&["verify"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains(" 0 records"), "{out}");
}

#[tokio::test]
async fn folder_source_moves_bad_files_to_rejected_with_a_reason_and_keeps_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let corpus = corpus();
    for (name, bytes) in &corpus {
        std::fs::write(inbox.join(name), bytes).expect("write");
    }
    // Odd but legal names of good files.
    std::fs::write(
        inbox.join("a..b.json"),
        read_sample("answered-with-surveys.json"),
    )
    .expect("write");
    std::fs::write(
        inbox.join("x...json"),
        read_sample("translated-german.json"),
    )
    .expect("write");
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        format!(
            "[folder]\npath = {:?}\nsettle_ms = 100\nrescan_secs = 1\n",
            inbox.display().to_string()
        ),
    )
    .expect("config");
    let server = Server::start(
        &dir.path().join("data"),
        &[("CHATVAULT_CONFIG", config.to_str().expect("utf8"))],
    );
    let key = server.first_key.clone().expect("key");

    let deadline = Instant::now() + Duration::from_secs(60);
    let rejected = inbox.join("rejected");
    loop {
        let left = std::fs::read_dir(&inbox)
            .expect("inbox")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} files never left the inbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, _) in &corpus {
        assert!(rejected.join(name).is_file(), "{name} not in rejected/");
        let report: Value = serde_json::from_slice(
            &std::fs::read(rejected.join(format!("{name}.error.json"))).expect("reason file"),
        )
        .expect("json");
        assert!(
            report["reason"].as_str().is_some_and(|r| r.len() > 10),
            "{name}: {report}"
        );
    }
    let processed = inbox.join("processed");
    assert!(processed.join("a..b.json").is_file() && processed.join("x...json").is_file());
    assert_eq!(
        chat_counts(&server, &key).await,
        (2, 0),
        "only the two good files are stored"
    );
}
