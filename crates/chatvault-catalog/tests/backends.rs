//! The same behaviour, checked on both back-ends: SQLite in a temporary file and the
//! PostgreSQL server named by CHATVAULT_TEST_POSTGRES_URL (each test in its own schema).

use chatvault_catalog::{
    AppliedChange, AuditEvent, Catalog, HoldScope, IngestStat, ReportWrite, Scope, SessionLimits,
};
use chatvault_model::ContentHash;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn sqlite() -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    (Catalog::connect(&url).await.expect("sqlite catalog"), dir)
}

async fn postgres(test: &str) -> Catalog {
    let base =
        std::env::var("CHATVAULT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    let schema = format!("cv_{test}_{}", std::process::id());
    let admin = Catalog::connect_raw(&base).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {base} is required for catalog tests (scripts/test.sh starts one): {e}"
        )
    });
    admin
        .execute_raw(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop schema");
    admin
        .execute_raw(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    Catalog::connect(&url).await.expect("postgres catalog")
}

fn change(seq: u64, uid: &str, hash: u8, deleted: bool) -> AppliedChange {
    AppliedChange {
        seq,
        segment: seq / 10,
        chat_uid: uid.to_owned(),
        site_key: 3,
        deleted,
        content_hash: ContentHash([hash; 32]),
        received_at_us: 1_000 + seq as i64,
        source: "webhook".into(),
    }
}

async fn versions_deletes_and_replay(catalog: Catalog) {
    assert_eq!(catalog.next_seq().await.expect("watermark"), 0);
    catalog
        .apply(
            &[change(0, "a", 1, false), change(1, "b", 2, false)],
            &[IngestStat {
                source: "webhook".into(),
                outcome: "accepted".into(),
                documents: 2,
                bytes: 100,
            }],
        )
        .await
        .expect("apply");
    catalog
        .apply(&[change(2, "a", 3, false)], &[])
        .await
        .expect("apply update");
    catalog
        .apply(&[change(3, "b", 0, true)], &[])
        .await
        .expect("apply delete");
    let states = catalog
        .lookup(&["a", "b", "missing"])
        .await
        .expect("lookup");
    assert_eq!(states.len(), 2);
    assert_eq!(states["a"].version, 2);
    assert_eq!(states["a"].content_hash, ContentHash([3; 32]));
    assert_eq!(states["a"].archive_seq, 2);
    assert!(!states["a"].deleted);
    assert_eq!(states["b"].version, 2);
    assert!(states["b"].deleted);
    assert_eq!(catalog.next_seq().await.expect("watermark"), 4);
    assert_eq!(catalog.chat_counts(None).await.expect("counts"), (1, 1));
    // Every chat here is on site 3: a site-restricted count sees them or nothing.
    assert_eq!(
        catalog.chat_counts(Some(&[3, 4])).await.expect("counts"),
        (1, 1)
    );
    assert_eq!(
        catalog.chat_counts(Some(&[4])).await.expect("counts"),
        (0, 0)
    );
    assert_eq!(
        catalog.chat_counts(Some(&[])).await.expect("counts"),
        (0, 0)
    );

    // Replaying records the catalog already holds changes nothing.
    catalog
        .apply(
            &[
                change(0, "a", 1, false),
                change(2, "a", 3, false),
                change(3, "b", 0, true),
            ],
            &[],
        )
        .await
        .expect("replay");
    let again = catalog.lookup(&["a", "b"]).await.expect("lookup");
    assert_eq!(again, states);
    assert_eq!(catalog.next_seq().await.expect("watermark"), 4);

    let mut seen = Vec::new();
    catalog
        .for_each_chat(|s| seen.push(s.chat_uid))
        .await
        .expect("stream");
    assert_eq!(seen, vec!["a", "b"]);

    // Anonymisation re-hashes the newest version; a row now pointing elsewhere is left.
    let changed = catalog
        .set_content_hashes(&[
            ("a".to_owned(), 2, ContentHash([9; 32])),
            ("b".to_owned(), 1, ContentHash([9; 32])),
        ])
        .await
        .expect("set hashes");
    assert_eq!(changed, 1);
    let now = catalog.lookup(&["a", "b"]).await.expect("lookup");
    assert_eq!(now["a"].content_hash, ContentHash([9; 32]));
    assert_eq!(now["b"].content_hash, states["b"].content_hash);

    let stats = catalog.ingest_stats().await.expect("stats");
    assert_eq!(stats[0].documents, 2);
    assert_eq!(stats[0].bytes, 100);

    // Several outcomes in one apply: each adds to its own total.
    let stat = |outcome: &str, documents: i64, bytes: i64| IngestStat {
        source: "webhook".into(),
        outcome: outcome.into(),
        documents,
        bytes,
    };
    catalog
        .apply(
            &[change(4, "d", 7, false)],
            &[stat("accepted", 1, 50), stat("rejected", 3, 30)],
        )
        .await
        .expect("apply with two outcomes");
    assert_eq!(
        catalog.ingest_stats().await.expect("stats"),
        vec![stat("accepted", 3, 150), stat("rejected", 3, 30)]
    );
    assert_eq!(catalog.next_seq().await.expect("watermark"), 5);

    // One batch that changes a chat three times, among more chats than one statement holds.
    let mut batch: Vec<AppliedChange> = (0..1200)
        .map(|i| change(10 + i, &format!("bulk{i:04}"), 4, false))
        .collect();
    batch.insert(600, change(1210, "c", 5, false));
    batch.push(change(1211, "c", 6, false));
    batch.push(change(1212, "c", 0, true));
    catalog.apply(&batch, &[]).await.expect("bulk apply");
    let after = catalog
        .lookup(&["c", "bulk0000", "bulk1199"])
        .await
        .expect("lookup");
    assert_eq!(
        (
            after["c"].version,
            after["c"].deleted,
            after["c"].archive_seq
        ),
        (3, true, 1212)
    );
    assert_eq!(after["bulk1199"].version, 1);
    assert_eq!(after["bulk1199"].archive_seq, 1209);
    assert_eq!(catalog.next_seq().await.expect("watermark"), 1213);
    assert_eq!(catalog.chat_counts(None).await.expect("counts"), (1202, 2));
}

async fn checkpoints_and_keys(catalog: Catalog) {
    assert_eq!(catalog.checkpoint("cosmos").await.expect("read"), None);
    catalog
        .set_checkpoint("cosmos", "ts=5", 1)
        .await
        .expect("set");
    catalog
        .set_checkpoint("cosmos", "ts=9", 2)
        .await
        .expect("set");
    assert_eq!(
        catalog.checkpoint("cosmos").await.expect("read").as_deref(),
        Some("ts=9")
    );

    assert!(!catalog.has_keys().await.expect("count"));
    let key = catalog
        .create_key("bi", &[Scope::Read], Some(&[1, 2]), 10)
        .await
        .expect("create");
    assert!(key.secret.starts_with("cv_") && key.secret.len() == 51);
    let found = catalog
        .authenticate(&key.secret)
        .await
        .expect("auth")
        .expect("known key");
    assert_eq!(found.sites, Some(vec![1, 2]));
    assert!(found.allows(Scope::Read) && !found.allows(Scope::Ingest));
    assert!(found.may_see_site(2) && !found.may_see_site(3));
    assert!(catalog
        .authenticate("cv_wrong")
        .await
        .expect("auth")
        .is_none());
    assert!(catalog.revoke_key(&key.key.id, 11).await.expect("revoke"));
    assert!(!catalog
        .revoke_key(&key.key.id, 12)
        .await
        .expect("revoke twice"));
    assert!(catalog
        .authenticate(&key.secret)
        .await
        .expect("auth")
        .is_none());
    let admin = catalog
        .create_key("ops", &[Scope::Admin], None, 13)
        .await
        .expect("create");
    assert!(admin.key.allows(Scope::Ingest) && admin.key.may_see_site(99));
    assert_eq!(catalog.list_keys().await.expect("list").len(), 2);
}

#[tokio::test]
async fn sqlite_versions_deletes_and_replay() {
    let (catalog, _dir) = sqlite().await;
    versions_deletes_and_replay(catalog).await;
}

#[tokio::test]
async fn postgres_versions_deletes_and_replay() {
    versions_deletes_and_replay(postgres("versions").await).await;
}

/// A batch whose last statement fails records nothing of it (on SQLite a batch's
/// statements travel as one string, which must not leave the first ones applied), and
/// the catalog takes the next batch as usual.
async fn a_failed_apply_records_nothing(catalog: Catalog, refuse_outcome: &[&str]) {
    for statement in refuse_outcome {
        catalog
            .execute_raw(statement)
            .await
            .expect("create trigger");
    }
    let stat = |outcome: &str| IngestStat {
        source: "webhook".into(),
        outcome: outcome.into(),
        documents: 1,
        bytes: 10,
    };
    let refused = catalog
        .apply(&[change(0, "a", 1, false)], &[stat("refused")])
        .await
        .expect_err("the trigger refuses the statistics");
    assert!(
        refused.to_string().contains("outcome refused"),
        "unexpected error: {refused}"
    );
    assert!(catalog.lookup(&["a"]).await.expect("lookup").is_empty());
    assert_eq!(catalog.next_seq().await.expect("watermark"), 0);
    assert!(catalog.ingest_stats().await.expect("stats").is_empty());

    catalog
        .apply(&[change(0, "a", 1, false)], &[stat("accepted")])
        .await
        .expect("apply after a failed one");
    assert_eq!(
        catalog.chat("a").await.expect("lookup").map(|s| s.version),
        Some(1)
    );
    assert_eq!(catalog.next_seq().await.expect("watermark"), 1);
    assert_eq!(
        catalog.ingest_stats().await.expect("stats"),
        vec![stat("accepted")]
    );
}

#[tokio::test]
async fn sqlite_a_failed_apply_records_nothing() {
    let (catalog, _dir) = sqlite().await;
    a_failed_apply_records_nothing(
        catalog,
        &[
            "CREATE TRIGGER refuse_outcome BEFORE INSERT ON ingest_stats \
           WHEN NEW.outcome = 'refused' BEGIN SELECT RAISE(ABORT, 'outcome refused'); END",
        ],
    )
    .await;
}

#[tokio::test]
async fn postgres_a_failed_apply_records_nothing() {
    a_failed_apply_records_nothing(
        postgres("failed").await,
        &[
            "CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'outcome refused'; END $$",
            "CREATE TRIGGER refuse_outcome BEFORE INSERT ON ingest_stats FOR EACH ROW \
             WHEN (NEW.outcome = 'refused') EXECUTE FUNCTION refuse_outcome()",
        ],
    )
    .await;
}

/// Each chat's latest source, as a source mirroring its upstream's deletes reads it.
async fn latest_source(catalog: Catalog) {
    let from = |seq: u64, uid: &str, deleted: bool, source: &str| AppliedChange {
        source: source.into(),
        ..change(seq, uid, seq as u8, deleted)
    };
    catalog
        .apply(
            &[
                from(0, "a", false, "cosmos"),
                from(1, "b", false, "cosmos"),
                from(2, "c", false, "cosmos"),
                from(3, "d", false, "webhook"),
                // b is re-sent through the webhook, c deleted: neither is Cosmos's now.
                from(4, "b", false, "webhook"),
                from(5, "c", true, "cosmos"),
                // d changes in Cosmos DB: Cosmos's again.
                from(6, "d", false, "cosmos"),
            ],
            &[],
        )
        .await
        .expect("apply");
    let live = catalog
        .live_chats_from("cosmos")
        .await
        .expect("cosmos chats");
    let mut live: Vec<(String, i64)> = live.into_iter().collect();
    live.sort();
    assert_eq!(live, vec![("a".into(), 1), ("d".into(), 2)]);
    let webhook = catalog.live_chats_from("webhook").await.expect("webhook");
    assert_eq!(webhook.get("b"), Some(&2));
    assert_eq!(webhook.len(), 1);

    catalog
        .set_checkpoint("cosmos:db/one", "5", 1)
        .await
        .expect("checkpoint");
    catalog
        .set_checkpoint("folder", "x", 1)
        .await
        .expect("checkpoint");
    assert_eq!(
        catalog.checkpoint_names().await.expect("names"),
        vec!["cosmos:db/one".to_owned(), "folder".to_owned()]
    );
}

#[tokio::test]
async fn sqlite_latest_source() {
    let (catalog, _dir) = sqlite().await;
    latest_source(catalog).await;
}

#[tokio::test]
async fn postgres_latest_source() {
    latest_source(postgres("source").await).await;
}

#[tokio::test]
async fn sqlite_checkpoints_and_keys() {
    let (catalog, _dir) = sqlite().await;
    checkpoints_and_keys(catalog).await;
}

#[tokio::test]
async fn postgres_checkpoints_and_keys() {
    checkpoints_and_keys(postgres("keys").await).await;
}

/// A chat's later versions keep the segment of its first record.
async fn first_segments(catalog: Catalog) {
    catalog
        .apply(&[change(3, "a", 1, false)], &[])
        .await
        .expect("apply");
    catalog
        .apply(&[change(57, "a", 2, false), change(58, "b", 3, false)], &[])
        .await
        .expect("apply later");
    assert_eq!(catalog.first_segment("a").await.expect("first"), Some(0));
    assert_eq!(
        catalog
            .chat("a")
            .await
            .expect("chat")
            .map(|s| s.archive_segment),
        Some(5)
    );
    assert_eq!(catalog.first_segment("b").await.expect("first"), Some(5));
    assert_eq!(catalog.first_segment("missing").await.expect("first"), None);
}

#[tokio::test]
async fn sqlite_first_segments() {
    let (catalog, _dir) = sqlite().await;
    first_segments(catalog).await;
}

#[tokio::test]
async fn postgres_first_segments() {
    first_segments(postgres("first_segments").await).await;
}

async fn console_sessions(catalog: Catalog) {
    const MIN: i64 = 60_000_000;
    let limits = SessionLimits {
        idle_us: 30 * MIN,
        absolute_us: 8 * 60 * MIN,
    };
    let key = catalog
        .create_key("officer", &[Scope::Read], Some(&[3]), 1)
        .await
        .expect("create");
    let token = catalog
        .create_session(&key.key.id, limits, 10)
        .await
        .expect("open");
    assert_eq!(token.len(), 64);
    let session = catalog
        .session(&token, limits, 10 + MIN)
        .await
        .expect("look up")
        .expect("live");
    assert_eq!(session.key.id, key.key.id);
    assert_eq!(session.key.sites, Some(vec![3]));
    assert_eq!(session.expires_us, 10 + limits.absolute_us);
    assert!(catalog
        .session("not-a-token", limits, 10)
        .await
        .expect("look up")
        .is_none());
    // Activity at 1 min was written, so idleness counts from there.
    let active = 10 + MIN + limits.idle_us - 1;
    assert!(catalog
        .session(&token, limits, active)
        .await
        .expect("look up")
        .is_some());
    assert!(catalog
        .session(&token, limits, active + limits.idle_us + 1)
        .await
        .expect("look up")
        .is_none());

    // However active, a session ends at its absolute end.
    let busy = catalog
        .create_session(&key.key.id, limits, 20)
        .await
        .expect("open");
    let mut at = 20;
    while at + 20 * MIN < 20 + limits.absolute_us {
        at += 20 * MIN;
        assert!(catalog
            .session(&busy, limits, at)
            .await
            .expect("look up")
            .is_some());
    }
    assert!(catalog
        .session(&busy, limits, 20 + limits.absolute_us)
        .await
        .expect("look up")
        .is_none());

    let other = catalog
        .create_session(&key.key.id, limits, 30)
        .await
        .expect("open");
    assert!(catalog.end_session(&other).await.expect("sign out"));
    assert!(!catalog.end_session(&other).await.expect("sign out twice"));
    assert!(catalog
        .session(&other, limits, 31)
        .await
        .expect("look up")
        .is_none());

    // Revoking the key ends its sessions at once.
    let live = catalog
        .create_session(&key.key.id, limits, 40)
        .await
        .expect("open");
    assert!(catalog
        .session(&live, limits, 41)
        .await
        .expect("look up")
        .is_some());
    assert!(catalog.revoke_key(&key.key.id, 42).await.expect("revoke"));
    assert!(catalog
        .session(&live, limits, 43)
        .await
        .expect("look up")
        .is_none());
}

#[tokio::test]
async fn sqlite_console_sessions() {
    let (catalog, _dir) = sqlite().await;
    console_sessions(catalog).await;
}

#[tokio::test]
async fn postgres_console_sessions() {
    console_sessions(postgres("sessions").await).await;
}

async fn report_definitions(catalog: Catalog) {
    let builtins = |ids: &[(&str, &str)]| {
        ids.iter()
            .map(|(id, def)| ((*id).to_owned(), (*def).to_owned()))
            .collect::<Vec<_>>()
    };
    catalog
        .seed_builtin_reports(&builtins(&[("a", "{1}"), ("b", "{2}")]), 1)
        .await
        .expect("seed");
    assert_eq!(
        catalog.create_report("c", "{3}", 2).await.expect("create"),
        ReportWrite::Done
    );
    assert_eq!(
        catalog.create_report("a", "{x}", 2).await.expect("create"),
        ReportWrite::Exists
    );
    assert_eq!(
        catalog.update_report("a", "{x}", 3).await.expect("update"),
        ReportWrite::Builtin
    );
    assert_eq!(
        catalog.delete_report("b").await.expect("delete"),
        ReportWrite::Builtin
    );
    assert_eq!(
        catalog.update_report("c", "{4}", 3).await.expect("update"),
        ReportWrite::Done
    );
    assert_eq!(
        catalog.update_report("zz", "{4}", 3).await.expect("update"),
        ReportWrite::Missing
    );
    // A new release: "a" changed, "b" retired, "c" stays custom even if a built-in wants its id.
    catalog
        .seed_builtin_reports(&builtins(&[("a", "{1b}"), ("c", "{9}")]), 4)
        .await
        .expect("reseed");
    let all = catalog.list_reports().await.expect("list");
    let summary: Vec<(&str, bool, &str)> = all
        .iter()
        .map(|r| (r.id.as_str(), r.builtin, r.definition.as_str()))
        .collect();
    assert_eq!(summary, vec![("a", true, "{1b}"), ("c", false, "{4}")]);
    assert_eq!(
        catalog.delete_report("c").await.expect("delete"),
        ReportWrite::Done
    );
    assert_eq!(
        catalog.delete_report("c").await.expect("delete"),
        ReportWrite::Missing
    );
    assert!(catalog.get_report("c").await.expect("get").is_none());
}

#[tokio::test]
async fn sqlite_report_definitions() {
    let (catalog, _dir) = sqlite().await;
    report_definitions(catalog).await;
}

#[tokio::test]
async fn postgres_report_definitions() {
    report_definitions(postgres("reports").await).await;
}

#[tokio::test]
async fn unknown_url_schemes_are_refused_clearly() {
    let err = Catalog::connect("mysql://x").await.expect_err("refused");
    assert!(err.to_string().contains("sqlite://"), "{err}");
}

fn audit_event(action: &str, target: &str) -> AuditEvent {
    AuditEvent {
        actor: "cli:test".into(),
        address: "local".into(),
        action: action.into(),
        target: target.into(),
        detail: serde_json::json!({"n": 1}),
    }
}

async fn audit_chain(catalog: Catalog) {
    let report = catalog.verify_audit().await.expect("verify empty");
    assert!(report.ok() && report.entries == 0 && report.head_sha256.is_none());
    // Concurrent appenders race for the next seq; every one must land exactly once.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                catalog
                    .append_audit(&audit_event("key.create", &format!("k{i}")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("append");
    }
    let hold = catalog
        .append_audit(&audit_event("hold.place", "h1"))
        .await
        .expect("append");
    assert_eq!(hold.seq, 8);
    let all = catalog.list_audit(None, None, 100).await.expect("list");
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..9).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|w| w[1].prev_sha256 == w[0].sha256));
    let keys = catalog
        .list_audit(Some(2), Some("key"), 100)
        .await
        .expect("filtered");
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|r| r.action == "key.create" && r.seq > 2));
    let newest_key = catalog.newest_audit("key.create").await.expect("newest");
    assert_eq!(newest_key.map(|r| r.seq), Some(7));
    assert_eq!(
        catalog.newest_audit("hold.place").await.expect("newest"),
        Some(hold.clone())
    );
    assert_eq!(
        catalog.newest_audit("key").await.expect("newest"),
        None,
        "exact action only"
    );
    let report = catalog.verify_audit().await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.entries, 9);
    assert_eq!(report.head_sha256.as_deref(), Some(hold.sha256.as_str()));

    // An edited row is named; the rows after it are not blamed for it.
    catalog
        .execute_raw("UPDATE audit_log SET target = 'someone-else' WHERE seq = 3")
        .await
        .expect("tamper");
    let report = catalog.verify_audit().await.expect("verify");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("audit entry 3 "),
        "{:?}",
        report.problems
    );
    // A removed row is named too.
    catalog
        .execute_raw("DELETE FROM audit_log WHERE seq = 5")
        .await
        .expect("remove");
    let report = catalog.verify_audit().await.expect("verify");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("entries 5..5 are missing")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with("audit entry 6: links to previous hash")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn sqlite_audit_chain() {
    let (catalog, _dir) = sqlite().await;
    audit_chain(catalog).await;
}

#[tokio::test]
async fn postgres_audit_chain() {
    audit_chain(postgres("audit").await).await;
}

async fn holds(catalog: Catalog) {
    let chat = catalog
        .place_hold(
            &HoldScope::Chat {
                chat_uid: "6741A0C2E4B0A1F3C2D4E501".into(),
            },
            "matter 1",
            "cli:test",
        )
        .await
        .expect("place");
    assert_eq!(
        chat.scope,
        HoldScope::Chat {
            chat_uid: "6741a0c2e4b0a1f3c2d4e501".into()
        }
    );
    let site = HoldScope::Site {
        site_key: 3,
        from_date: Some("2024-01-01".into()),
        to_date: None,
    };
    let by_site = catalog
        .place_hold(&site, "matter 2", "cli:test")
        .await
        .expect("place");
    let by_email = catalog
        .place_hold(
            &HoldScope::Email {
                email: " D.Okafor@Example.org".into(),
            },
            "matter 3",
            "key:x",
        )
        .await
        .expect("place");
    assert_eq!(
        by_email.scope,
        HoldScope::Email {
            email: "d.okafor@example.org".into()
        }
    );
    assert_eq!(catalog.list_holds(false).await.expect("list").len(), 3);
    assert!(catalog
        .release_hold(&by_site.id, "key:y")
        .await
        .expect("release"));
    assert!(!catalog
        .release_hold(&by_site.id, "key:y")
        .await
        .expect("twice"));
    let active: Vec<String> = catalog
        .list_holds(false)
        .await
        .expect("list")
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert!(
        active.contains(&chat.id) && active.contains(&by_email.id) && !active.contains(&by_site.id)
    );
    let released = catalog.hold(&by_site.id).await.expect("get").expect("kept");
    assert_eq!(released.scope, site);
    assert_eq!(released.released_by.as_deref(), Some("key:y"));
    assert_eq!(catalog.list_holds(true).await.expect("all").len(), 3);
}

#[tokio::test]
async fn sqlite_holds() {
    let (catalog, _dir) = sqlite().await;
    holds(catalog).await;
}

#[tokio::test]
async fn postgres_holds() {
    holds(postgres("holds").await).await;
}
