//! `chatvault demo`: a fresh data directory filled with recent generated chats and served,
//! as a newcomer's first command.

mod common;

use common::{client, Server};
use serde_json::Value;

#[tokio::test]
async fn the_demo_serves_recent_chats_with_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let server = Server::start_demo(&data, &["--chats", "300", "--days", "30"]);
    let key = server
        .first_key
        .clone()
        .expect("the demo prints an admin key");
    let count = |query: String| {
        let (url, key) = (server.url(&query), key.clone());
        async move {
            client()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("count")
                .text()
                .await
                .expect("body")
                .parse::<u64>()
                .expect("a number")
        }
    };
    assert_eq!(count("/odata/Chats/$count".into()).await, 300);
    let a_week_ago = chrono::Utc::now().date_naive() - chrono::Days::new(6);
    let this_week = count(format!(
        "/odata/Chats/$count?$filter=Started%20ge%20{a_week_ago}T00:00:00Z"
    ))
    .await;
    assert!(this_week > 0, "this week is not empty");
    let console = client()
        .get(server.url("/console/"))
        .send()
        .await
        .expect("console");
    assert_eq!(console.status().as_u16(), 200);
    let stats: Value = client()
        .get(server.url("/api/v1/stats"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["chats"], 300, "{stats}");
    drop(server);

    // A second demo into the same directory is refused, and says why.
    let (code, _, err) = common::run(&["demo", "--chats", "10"], &data);
    assert_ne!(code, 0);
    assert!(err.contains("already holds an archive"), "{err}");
}
