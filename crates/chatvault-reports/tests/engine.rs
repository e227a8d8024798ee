//! The engine and library over a real catalog and store holding generated chats (half
//! flushed to Parquet, half in the write buffer), checked against counts taken straight
//! from the generated documents.

use chatvault_catalog::Catalog;
use chatvault_gen::Generator;
use chatvault_model::{flatten, ChatDocument};
use chatvault_reports::{
    builtin_reports, Engine, EngineConfig, Library, ReportDefinition, ReportsError, RunRequest,
};
use chatvault_store::{Store, StoreConfig, StoreUpdate};
use chrono::NaiveDate;
use std::time::Duration;

const CHATS: u64 = 1_500;

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    store: Store,
    docs: Vec<serde_json::Value>,
}

fn day(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::connect(&format!(
        "sqlite://{}",
        dir.path().join("catalog.db").display()
    ))
    .await
    .expect("catalog");
    let store = Store::open(StoreConfig::new(dir.path().join("store")), catalog.clone())
        .await
        .expect("store");
    let generator = Generator {
        start: day("2024-07-20"),
        days: 50,
        ..Generator::new(11)
    };
    let docs: Vec<serde_json::Value> = (0..CHATS).map(|i| generator.chat(i)).collect();
    for (half, chunk) in docs.chunks(docs.len() / 2 + 1).enumerate() {
        let offset = if half == 0 { 0 } else { docs.len() / 2 + 1 };
        let updates = chunk
            .iter()
            .enumerate()
            .map(|(i, d)| StoreUpdate::Upsert {
                seq: (offset + i) as u64,
                flat: Box::new(
                    flatten(ChatDocument::from_value(d).expect("model"), 0).into_owned(),
                ),
                supersedes: false,
            })
            .collect();
        store.apply(updates).expect("apply");
        if half == 0 {
            store.flush().await.expect("flush");
        }
    }
    Fixture {
        _dir: dir,
        catalog,
        store,
        docs,
    }
}

impl Fixture {
    /// Chats of `site` that started in August 2024, from the documents themselves.
    fn august(&self, site: i64) -> Vec<&serde_json::Value> {
        self.docs
            .iter()
            .filter(|d| {
                d["ChatHeader"]["SiteKey"].as_i64() == Some(site)
                    && d["ChatHeader"]["Started"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("2024-08"))
            })
            .collect()
    }

    fn sites(&self) -> (i32, i32) {
        let mut sites: Vec<i64> = self
            .docs
            .iter()
            .filter_map(|d| d["ChatHeader"]["SiteKey"].as_i64())
            .collect();
        sites.sort_unstable();
        sites.dedup();
        assert!(sites.len() >= 2, "the generator makes several sites");
        (sites[0] as i32, sites[1] as i32)
    }

    fn engine(&self, limit: Duration) -> Engine {
        Engine::new(
            self.store.clone(),
            EngineConfig {
                time_limit: limit,
                ..EngineConfig::default()
            },
        )
    }
}

fn custom(id: &str, sql: &str) -> ReportDefinition {
    ReportDefinition {
        id: id.into(),
        group_name: "Custom".into(),
        name: id.into(),
        r#type: 0,
        chart_field: String::new(),
        chart_label: String::new(),
        chart_label_is_date: false,
        date_selector_type: 8,
        format_string: String::new(),
        format_color: String::new(),
        sql: sql.into(),
        max_rows: 0,
        site_keys: vec![],
        builtin: false,
    }
}

fn august(site: i32) -> RunRequest {
    RunRequest {
        site_key: site,
        from: Some(day("2024-08-01")),
        to: Some(day("2024-08-31")),
    }
}

fn today() -> NaiveDate {
    day("2024-08-20")
}

fn int(value: &serde_json::Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("{value} is not an integer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_reports_agree_with_the_documents() {
    let f = fixture().await;
    let (site, _) = f.sites();
    let expected = f.august(i64::from(site));
    assert!(
        expected.len() > 50,
        "enough chats for the test: {}",
        expected.len()
    );
    let engine = f.engine(Duration::from_secs(60));
    for report in builtin_reports().expect("built-ins") {
        let result = engine
            .run(&report, &august(site), None, today())
            .await
            .unwrap_or_else(|e| panic!("built-in {} failed: {e}", report.id));
        let json = result.to_json();
        assert_eq!(json["ReportId"], report.id.as_str());
        assert!(
            result.row_count() <= report.row_limit() as usize,
            "{} returned too many rows",
            report.id
        );
        assert!(result.row_count() > 0, "{} returned nothing", report.id);
    }

    let per_day = builtin_reports()
        .expect("built-ins")
        .into_iter()
        .find(|r| r.id == "chats-per-day")
        .expect("chats-per-day");
    let json = engine
        .run(&per_day, &august(site), None, today())
        .await
        .expect("run")
        .to_json();
    assert_eq!(
        json["ColumnNames"],
        serde_json::json!(["Dated", "Chats", "Answered", "Missed", "Bot"])
    );
    assert_eq!(
        json["ColumnTypes"],
        serde_json::json!(["Date", "Int64", "Int64", "Int64", "Int64"])
    );
    let rows = json["Data"].as_array().expect("rows");
    let total: i64 = rows.iter().map(|r| int(&r[1])).sum();
    let missed: i64 = rows.iter().map(|r| int(&r[3])).sum();
    assert_eq!(total as usize, expected.len());
    assert_eq!(
        missed as usize,
        expected
            .iter()
            .filter(|d| d["ChatHeader"]["Missed"] == true)
            .count()
    );
    assert!(rows
        .iter()
        .all(|r| r[0].as_str().is_some_and(|d| d.starts_with("2024-08-"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_restricts_every_table_whatever_the_sql_says() {
    let f = fixture().await;
    let (site, other) = f.sites();
    let expected = f.august(i64::from(site));
    let engine = f.engine(Duration::from_secs(60));
    let count = |sql: &str| {
        let report = custom("count", sql);
        let engine = engine.clone();
        async move {
            let result = engine
                .run(&report, &august(site), None, today())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", report.sql));
            int(&result.to_json()["Data"][0][0])
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM Chats").await as usize,
        expected.len()
    );
    assert_eq!(
        count(&format!(
            "SELECT COUNT(*) AS n FROM Chats WHERE SiteKey = {other}"
        ))
        .await,
        0,
        "the SQL cannot reach another site"
    );
    let lines: usize = expected
        .iter()
        .map(|d| d["Lines"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM ChatLines").await as usize,
        lines
    );
    let tags: usize = expected
        .iter()
        .map(|d| {
            let mut t: Vec<&str> = d["ChatHeader"]["Tags"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            t.sort_unstable();
            t.dedup();
            t.len()
        })
        .sum();
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM ChatTags").await as usize,
        tags
    );
    assert_eq!(
        count("SELECT SUM(Chats) AS n FROM DaySummary").await as usize,
        expected.len()
    );

    let report = custom("count", "SELECT COUNT(*) AS n FROM Chats");
    let denied = engine
        .run(&report, &august(other), Some(&[i64::from(site)]), today())
        .await;
    assert!(
        matches!(denied, Err(ReportsError::Forbidden(_))),
        "{denied:?}"
    );
    let limited = ReportDefinition {
        site_keys: vec![i64::from(other)],
        ..report.clone()
    };
    let denied = engine.run(&limited, &august(site), None, today()).await;
    assert!(
        matches!(denied, Err(ReportsError::Forbidden(_))),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_and_time_limits_hold() {
    let f = fixture().await;
    let (site, _) = f.sites();
    let capped = ReportDefinition {
        max_rows: 3,
        ..custom("lines", "SELECT ChatUID, Seq, Dated FROM ChatLines")
    };
    let result = f
        .engine(Duration::from_secs(60))
        .run(&capped, &august(site), None, today())
        .await
        .expect("run");
    assert_eq!(result.row_count(), 3);
    assert_eq!(
        result.to_json()["ColumnTypes"],
        serde_json::json!(["String", "Int64", "DateTime"])
    );

    // No real query finishes in zero time: the engine gives up and says so.
    let slow = custom(
        "slow",
        "SELECT a.Role, COUNT(*) AS n FROM ChatLines a JOIN ChatLines b ON a.ChatUID = b.ChatUID GROUP BY a.Role",
    );
    let timed_out = f
        .engine(Duration::ZERO)
        .run(&slow, &august(site), None, today())
        .await;
    assert!(
        matches!(timed_out, Err(ReportsError::Timeout(0))),
        "{timed_out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_keeps_builtins_read_only_and_checks_custom_reports() {
    let f = fixture().await;
    let library = Library::new(f.catalog.clone());
    let shipped = builtin_reports().expect("built-ins").len();
    assert_eq!(library.seed().await.expect("seed"), shipped);
    assert_eq!(library.seed().await.expect("seed again"), shipped);
    let listed = library.list().await.expect("list");
    assert_eq!(listed.len(), shipped);
    assert!(listed.iter().all(|r| r.builtin));

    let report = custom(
        "my-report",
        "SELECT RequestedDept, COUNT(*) AS n FROM Chats GROUP BY RequestedDept",
    );
    let saved = library.create(&report).await.expect("create");
    assert!(!saved.builtin);
    assert!(matches!(
        library.create(&report).await,
        Err(ReportsError::Exists(_))
    ));
    let changed = ReportDefinition {
        name: "Renamed".into(),
        ..report.clone()
    };
    library.update("my-report", &changed).await.expect("update");
    assert_eq!(library.get("my-report").await.expect("get").name, "Renamed");

    let builtin = library.get("chats-per-day").await.expect("builtin");
    assert!(builtin.builtin);
    assert!(matches!(
        library.update("chats-per-day", &builtin).await,
        Err(ReportsError::Builtin(_))
    ));
    assert!(matches!(
        library.delete("chats-per-day").await,
        Err(ReportsError::Builtin(_))
    ));
    assert!(matches!(
        library
            .create(&ReportDefinition {
                id: "chats-per-day".into(),
                ..report.clone()
            })
            .await,
        Err(ReportsError::Exists(_))
    ));

    for (sql, reason) in [
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "table functions",
        ),
        ("SELECT NoSuchColumn FROM Chats", "empty tables"),
        ("SELECT 1; SELECT 2", "exactly one"),
    ] {
        match library.create(&custom("bad", sql)).await {
            Err(ReportsError::InvalidSql(message)) => {
                assert!(message.contains(reason), "{sql}: {message}")
            }
            other => panic!("{sql} should be rejected, got {other:?}"),
        }
    }
    assert!(matches!(
        library.get("bad").await,
        Err(ReportsError::NotFound(_))
    ));

    library.delete("my-report").await.expect("delete");
    assert!(matches!(
        library.delete("my-report").await,
        Err(ReportsError::NotFound(_))
    ));
    assert_eq!(library.list().await.expect("list").len(), shipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_count_days_in_the_site_zone() {
    let f = fixture().await;
    let engine_in = |zone: &str| {
        Engine::new(
            f.store.clone(),
            EngineConfig {
                site_tz: zone.parse().expect("zone"),
                ..EngineConfig::default()
            },
        )
    };
    // UTC+14 and UTC-11 are 25 hours apart: their calendars never show the same day,
    // and UTC's day lies between them.
    let east = engine_in("Pacific/Kiritimati").today();
    let west = engine_in("Pacific/Pago_Pago").today();
    let utc = engine_in("UTC").today();
    assert!(east > west, "{east} vs {west}");
    assert!(west <= utc && utc <= east, "{west} {utc} {east}");
}
