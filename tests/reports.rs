//! Reports end to end: the real binary, generated chats imported, the CLI and the HTTP
//! routes (list, run as JSON and CSV, site restriction, admin changes and their checks).

mod common;

use common::{client, create_key, run, Server};
use serde_json::{json, Value};
use std::path::Path;

/// Generates and imports chats for August 2024; returns the documents.
fn load(dir: &Path) -> Vec<Value> {
    let ndjson = dir.join("chats.ndjson");
    let data = dir.join("data");
    let (code, _, err) = run(
        &[
            "gen",
            "--chats",
            "2000",
            "--seed",
            "21",
            "--start",
            "2024-08-01",
            "--days",
            "31",
            "--out",
            &ndjson.display().to_string(),
        ],
        &data,
    );
    assert_eq!(code, 0, "gen: {err}");
    let (code, _, err) = run(&["import", &ndjson.display().to_string()], &data);
    assert_eq!(code, 0, "import: {err}");
    std::fs::read_to_string(&ndjson)
        .expect("ndjson")
        .lines()
        .map(|l| serde_json::from_str(l).expect("document"))
        .collect()
}

fn count_for(docs: &[Value], site: i64) -> usize {
    docs.iter()
        .filter(|d| d["ChatHeader"]["SiteKey"].as_i64() == Some(site))
        .count()
}

fn two_sites(docs: &[Value]) -> (i64, i64) {
    let mut sites: Vec<i64> = docs
        .iter()
        .filter_map(|d| d["ChatHeader"]["SiteKey"].as_i64())
        .collect();
    sites.sort_unstable();
    sites.dedup();
    (sites[0], sites[1])
}

fn august(site: i64) -> Value {
    json!({"SiteKey": site, "FromDate": "2024-08-01", "ToDate": "2024-08-31"})
}

fn total_chats(result: &Value) -> i64 {
    result["Data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[1].as_i64().expect("Chats"))
        .sum()
}

#[test]
fn the_cli_lists_and_runs_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = load(dir.path());
    let data = dir.path().join("data");
    let (site, _) = two_sites(&docs);

    let (code, out, err) = run(&["report", "list"], &data);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().count() > 15, "{out}");
    assert!(out.contains("chats-per-day"), "{out}");

    let site_arg = site.to_string();
    let args = [
        "report",
        "run",
        "chats-per-day",
        "--site",
        &site_arg,
        "--from",
        "2024-08-01",
        "--to",
        "2024-08-31",
    ];
    let (code, out, err) = run(&args, &data);
    assert_eq!(code, 0, "{err}");
    let result: Value = serde_json::from_str(&out).expect("JSON result");
    assert_eq!(total_chats(&result) as usize, count_for(&docs, site));

    let mut csv_args = args.to_vec();
    csv_args.extend(["--format", "csv"]);
    let (code, out, err) = run(&csv_args, &data);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("Dated,Chats,Answered,Missed,Bot"));
    assert_eq!(
        lines.count(),
        result["RowCount"].as_u64().expect("rows") as usize
    );

    let (code, _, err) = run(&["report", "run", "no-such-report", "--site", "1"], &data);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-report"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = load(dir.path());
    let data = dir.path().join("data");
    let (site, other) = two_sites(&docs);
    let limited = create_key(&data, "read", Some(&site.to_string()));
    let reader = create_key(&data, "read", None);
    let server = Server::start(&data, &[]);
    let admin = create_key(&data, "admin", None);
    let http = client();

    // List: the built-in library.
    let list: Vec<Value> = http
        .get(server.url("/api/v1/reports"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list json");
    assert!(list.len() >= 15, "{} reports", list.len());
    assert!(list
        .iter()
        .any(|r| r["Id"] == "chats-per-day" && r["Builtin"] == true));
    let one: Value = http
        .get(server.url("/api/v1/reports/missed-chats"))
        .header("X-Api-Key", &reader)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("get json");
    assert_eq!(one["Type"], 2);
    assert!(one["SQL"].as_str().expect("SQL").contains("DaySummary"));

    // Run as JSON and as CSV.
    let response = http
        .post(server.url("/api/v1/reports/chats-per-day/run"))
        .bearer_auth(&limited)
        .json(&august(site))
        .send()
        .await
        .expect("run");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("result");
    assert_eq!(result["ReportId"], "chats-per-day");
    assert_eq!(result["SiteKey"], site);
    assert_eq!(result["FromDate"], "2024-08-01");
    assert_eq!(result["ColumnTypes"][0], "Date");
    assert!(result["ExecuteMs"].is_u64());
    assert_eq!(total_chats(&result) as usize, count_for(&docs, site));
    let csv = http
        .post(server.url("/api/v1/reports/chats-per-day/run"))
        .bearer_auth(&limited)
        .header("Accept", "text/csv")
        .json(&august(site))
        .send()
        .await
        .expect("csv run");
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/csv"));
    let text = csv.text().await.expect("csv");
    assert!(
        text.starts_with("Dated,Chats,Answered,Missed,Bot\n"),
        "{text}"
    );

    // Every built-in runs over HTTP.
    for report in &list {
        let id = report["Id"].as_str().expect("id");
        let response = http
            .post(server.url(&format!("/api/v1/reports/{id}/run")))
            .bearer_auth(&reader)
            .json(&august(site))
            .send()
            .await
            .expect("run");
        assert_eq!(
            response.status(),
            200,
            "{id}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    // The key's site restriction holds, and bad parameters are refused.
    let denied = http
        .post(server.url("/api/v1/reports/chats-per-day/run"))
        .bearer_auth(&limited)
        .json(&august(other))
        .send()
        .await
        .expect("denied");
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.expect("error json");
    assert_eq!(body["error"]["code"], "Forbidden");
    for bad in [
        json!({"SiteKey": site, "FromDate": "2024-08-01' OR 1=1 --", "ToDate": "2024-08-31"}),
        json!({"SiteKey": "1 OR 1=1"}),
        json!({"FromDate": "2024-08-01"}),
    ] {
        let response = http
            .post(server.url("/api/v1/reports/chats-per-day/run"))
            .bearer_auth(&reader)
            .json(&bad)
            .send()
            .await
            .expect("bad run");
        assert_eq!(response.status(), 400, "{bad}");
    }
    let response = http
        .post(server.url("/api/v1/reports/chats-per-day/run"))
        .bearer_auth(&reader)
        .json(&json!({"SiteKey": site, "FromDate": "2024-09-01", "ToDate": "2024-08-01"}))
        .send()
        .await
        .expect("reversed dates");
    assert_eq!(response.status(), 400);

    // Admin: create a custom report whose SQL tries to reach another site.
    let custom = json!({
        "Id": "all-chats", "GroupName": "Custom", "Name": "All chats", "Type": 1,
        "ChartField": "n", "DateSelectorType": 8, "Builtin": true,
        "SQL": format!("SELECT COUNT(*) AS n FROM Chats WHERE SiteKey <> {other}")
    });
    let forbidden = http
        .post(server.url("/api/v1/reports"))
        .bearer_auth(&reader)
        .json(&custom)
        .send()
        .await
        .expect("create as reader");
    assert_eq!(forbidden.status(), 403);
    let created = http
        .post(server.url("/api/v1/reports"))
        .bearer_auth(&admin)
        .json(&custom)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let saved: Value = created.json().await.expect("created json");
    assert_eq!(
        saved["Builtin"], false,
        "a custom report cannot claim to be built in"
    );
    let result: Value = http
        .post(server.url("/api/v1/reports/all-chats/run"))
        .bearer_auth(&limited)
        .json(&august(site))
        .send()
        .await
        .expect("run custom")
        .json()
        .await
        .expect("custom result");
    assert_eq!(
        result["Data"][0][0].as_u64().expect("n") as usize,
        count_for(&docs, site)
    );

    let again = http
        .post(server.url("/api/v1/reports"))
        .bearer_auth(&admin)
        .json(&custom)
        .send()
        .await
        .expect("create again");
    assert_eq!(again.status(), 409);

    for (sql, expected) in [
        ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
        ("SELECT Nope FROM Chats", "empty tables"),
        ("DELETE FROM Chats", "SELECT"),
    ] {
        let response = http
            .post(server.url("/api/v1/reports"))
            .bearer_auth(&admin)
            .json(&json!({"Id": "bad", "GroupName": "g", "Name": "bad", "Type": 0, "SQL": sql}))
            .send()
            .await
            .expect("bad create");
        assert_eq!(response.status(), 422, "{sql}");
        let body: Value = response.json().await.expect("error");
        assert_eq!(body["error"]["code"], "InvalidReport");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(expected), "{sql}: {message}");
    }

    let mut changed = custom.clone();
    changed["Name"] = json!("Every chat");
    let replaced = http
        .put(server.url("/api/v1/reports/all-chats"))
        .bearer_auth(&admin)
        .json(&changed)
        .send()
        .await
        .expect("replace");
    assert_eq!(replaced.status(), 200);
    let builtin = http
        .delete(server.url("/api/v1/reports/chats-per-day"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete builtin");
    assert_eq!(builtin.status(), 409);
    let deleted = http
        .delete(server.url("/api/v1/reports/all-chats"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(server.url("/api/v1/reports/all-chats"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get deleted");
    assert_eq!(gone.status(), 404);
}
