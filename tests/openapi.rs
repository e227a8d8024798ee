//! The OpenAPI document and Swagger UI of the real binary: the document passes a
//! third-party validator (openapi-spec-validator), and a schema-driven fuzzer
//! (schemathesis) sends a bounded number of generated requests to the ingest and report
//! endpoints without getting a single 5xx. Both tools live in the Python virtualenv that
//! `scripts/test.sh` creates (CHATVAULT_TEST_VENV).

mod common;

use common::{client, Server};
use std::path::PathBuf;
use std::process::Command;

fn venv() -> PathBuf {
    let dir = common::test_venv();
    assert!(
        dir.join("bin/schemathesis").exists(),
        "{} has no schemathesis: run `bash scripts/test.sh`, which creates the test virtualenv \
         (or set CHATVAULT_TEST_VENV to one with schemathesis and openapi-spec-validator)",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_survives_fuzzing() {
    let venv = venv();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let key = server.first_key.clone().expect("admin key at first start");
    let http = client();

    let response = http
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.expect("openapi json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/chats",
        "/api/v1/reports",
        "/api/v1/reports/{id}/run",
        "/healthz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }

    // Swagger UI comes from the binary itself.
    let page = http.get(server.url("/docs/")).send().await.expect("docs");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("swagger-ui"));
    let asset = http
        .get(server.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("asset");
    assert_eq!(asset.status(), 200);
    assert!(asset.bytes().await.expect("js").len() > 100_000);

    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let validated = Command::new(venv.join("bin/openapi-spec-validator"))
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        validated.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let fuzzed = Command::new(venv.join("bin/schemathesis"))
        .args([
            "run",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--include-path-regex", "^/api/v1/(chats|reports|export)"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--url", &server.base])
        .args(["--seed", "1", "--no-color"])
        .arg(&file)
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&fuzzed.stdout),
        String::from_utf8_lossy(&fuzzed.stderr)
    );
    assert!(
        fuzzed.status.success(),
        "schemathesis found failures:\n{report}"
    );
    drop(server);
}
