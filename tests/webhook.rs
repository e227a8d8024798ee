//! The webhook over real HTTP: formats, idempotency, deletes, auth, signatures, limits.

mod common;

use common::{chat_counts, client, create_key, read_sample, Server};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;

async fn post(
    server: &Server,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let resp = client()
        .post(server.url("/api/v1/chats"))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn statuses(body: &Value) -> Vec<String> {
    body["results"].as_array().map_or_else(Vec::new, |r| {
        r.iter()
            .map(|o| o["status"].as_str().unwrap_or("").to_owned())
            .collect()
    })
}

#[tokio::test]
async fn same_document_twice_is_one_version_changed_is_new_version_delete_is_tombstone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let key = server
        .first_key
        .clone()
        .expect("first start prints an admin key");

    let (status, body) = post(
        &server,
        &key,
        "application/json",
        read_sample("missed-before-follow-up.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(statuses(&body), ["accepted"]);
    assert_eq!(body["results"][0]["version"], 1);

    // The same chat re-sent, even with Cosmos system properties or reformatted: unchanged.
    let (_, body) = post(
        &server,
        &key,
        "application/json",
        read_sample("missed-before-follow-up.json"),
    )
    .await;
    assert_eq!(statuses(&body), ["unchanged"]);
    let reformatted: Value =
        serde_json::from_slice(&read_sample("missed-before-follow-up.json")).expect("json");
    let (_, body) = post(
        &server,
        &key,
        "application/json",
        serde_json::to_vec(&reformatted).expect("compact"),
    )
    .await;
    assert_eq!(statuses(&body), ["unchanged"], "whitespace must not matter");

    // The follow-up: same ChatUID, new content.
    let (_, body) = post(
        &server,
        &key,
        "application/json",
        read_sample("missed-followed-up.json"),
    )
    .await;
    assert_eq!(statuses(&body), ["updated"]);
    assert_eq!(body["results"][0]["version"], 2);

    let uid = "6741a0c2e4b0a1f3c2d4e502";
    let del = client()
        .delete(server.url(&format!("/api/v1/chats/{uid}")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), StatusCode::OK);
    let del: Value = del.json().await.expect("json");
    assert_eq!(
        (del["status"].as_str(), del["version"].as_i64()),
        (Some("deleted"), Some(3))
    );
    let again: Value = client()
        .delete(server.url(&format!("/api/v1/chats/{uid}")))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(again["status"], "unchanged");
    let unknown = client()
        .delete(server.url("/api/v1/chats/ffffffffffffffffffffffff"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("delete");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(chat_counts(&server, &key).await, (0, 1));

    // Re-sending a deleted chat brings it back as a new version.
    let (_, body) = post(
        &server,
        &key,
        "application/json",
        read_sample("missed-followed-up.json"),
    )
    .await;
    assert_eq!(statuses(&body), ["updated"]);
    assert_eq!(body["results"][0]["version"], 4);
    drop(server);
    let (code, out, err) = common::run(&["verify"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 records"), "{out}");
}

#[tokio::test]
async fn arrays_ndjson_and_gzip_give_per_document_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let key = server.first_key.clone().expect("key");
    let gen = chatvault_gen::Generator::new(11);

    let array = serde_json::to_vec(&vec![
        gen.chat(0),
        serde_json::json!({"ChatHeader": {}}),
        gen.chat(1),
    ])
    .expect("array");
    let (status, body) = post(&server, &key, "application/json", array).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statuses(&body), ["accepted", "rejected", "accepted"]);
    assert_eq!(body["results"][1]["location"], "/1");
    assert_eq!(body["summary"]["accepted"], 2);

    let mut ndjson = Vec::new();
    for i in 2..6 {
        serde_json::to_writer(&mut ndjson, &gen.chat(i)).expect("write");
        ndjson.extend_from_slice(b"\n");
    }
    ndjson.extend_from_slice(b"{\"broken\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&ndjson).expect("gzip");
    let resp = client()
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        statuses(&body),
        ["accepted", "accepted", "accepted", "accepted", "rejected"]
    );
    assert_eq!(body["results"][4]["location"], "line 5");
    assert!(body["results"][4]["error"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("not valid JSON"));
    assert_eq!(chat_counts(&server, &key).await, (6, 0));
}

#[tokio::test]
async fn every_key_form_is_accepted_and_scopes_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Keys are created before the first start, when the data directory does not exist.
    let data = dir.path().join("not-yet-created");
    let ingest = create_key(&data, "ingest", None);
    let read = create_key(&data, "read", None);
    let server = Server::start(&data, &[]);
    assert!(
        server.first_key.is_none(),
        "no admin key is created when keys exist"
    );
    let doc = read_sample("answered-with-surveys.json");
    let send = |req: reqwest::RequestBuilder| {
        let doc = doc.clone();
        async move {
            req.header("content-type", "application/json")
                .body(doc)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    let url = server.url("/api/v1/chats");
    assert_eq!(
        send(client().post(&url).bearer_auth(&ingest)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(client().post(&url).basic_auth("powerbi", Some(&ingest))).await,
        StatusCode::OK
    );
    assert_eq!(
        send(client().post(&url).header("x-api-key", &ingest)).await,
        StatusCode::OK
    );
    assert_eq!(
        send(client().post(&url).bearer_auth(&read)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(client().post(&url).bearer_auth("cv_nope")).await,
        StatusCode::UNAUTHORIZED
    );
    let anonymous = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(doc.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["code"], "Unauthorized");
}

#[tokio::test]
async fn hmac_signatures_are_checked_when_a_secret_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[("CHATVAULT_WEBHOOK_SECRET", "s3cret")]);
    let key = server.first_key.clone().expect("key");
    let doc = read_sample("translated-german.json");
    let attempt = |sig: Option<String>| {
        let mut req = client()
            .post(server.url("/api/v1/chats"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(doc.clone());
        if let Some(sig) = sig {
            req = req.header("x-chatvault-signature", sig);
        }
        async move { req.send().await.expect("send").status() }
    };
    assert_eq!(attempt(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        attempt(Some(format!("sha256={}", sign(b"other", &doc)))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt(Some("sha256=zz".into())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        attempt(Some(format!("sha256={}", sign(b"s3cret", &doc)))).await,
        StatusCode::OK
    );
}

fn sign(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn oversized_and_mislabelled_bodies_are_refused_and_backpressure_says_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("chatvault.toml");
    std::fs::write(
        &config,
        "[ingest]\nmax_body_bytes = 200000\nmax_inflight_bytes = 1024\n",
    )
    .expect("config");
    let server = Server::start(
        dir.path(),
        &[("CHATVAULT_CONFIG", config.to_str().expect("utf8"))],
    );
    let key = server.first_key.clone().expect("key");
    let gen = chatvault_gen::Generator::new(3);

    let big =
        serde_json::to_vec(&(0..200).map(|i| gen.chat(i)).collect::<Vec<_>>()).expect("array");
    assert!(big.len() > 200_000);
    let (status, body) = post(&server, &key, "application/json", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "PayloadTooLarge");

    let (status, body) = post(
        &server,
        &key,
        "text/plain",
        read_sample("answered-with-surveys.json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");

    // With a 1 KiB in-flight budget, concurrent requests must be turned away with 503 and
    // Retry-After rather than queued without bound; every other request succeeds.
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let url = server.url("/api/v1/chats");
            let key = key.clone();
            let body = serde_json::to_vec(
                &(0..20)
                    .map(|j| gen.chat(1000 + i * 20 + j))
                    .collect::<Vec<_>>(),
            )
            .expect("array");
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("send");
                (resp.status(), resp.headers().get("retry-after").is_some())
            })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        let (status, retry_after) = t.await.expect("join");
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after, "503 without Retry-After");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        busy > 0,
        "no request was turned away although the budget allows one at a time"
    );
    let health = client()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
}
