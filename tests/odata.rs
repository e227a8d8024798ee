//! The OData feed over real HTTP, every answer checked against the same question asked
//! directly of the store's Parquet files with polars.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use common::{client, create_key, run, Server};
use polars::prelude::*;
use serde_json::Value;

const CHATS: &str = "3500";

/// Generates and imports a data set, compacted so every stored row is current.
fn dataset(dir: &Path) {
    let input = dir.join("input");
    let (code, _, err) = run(
        &[
            "gen",
            "--chats",
            CHATS,
            "--seed",
            "11",
            "--out",
            input.to_str().expect("utf-8"),
        ],
        dir,
    );
    assert_eq!(code, 0, "gen: {err}");
    let (code, _, err) = run(&["import", input.to_str().expect("utf-8")], dir);
    assert_eq!(code, 0, "import: {err}");
    let (code, _, err) = run(&["compact"], dir);
    assert_eq!(code, 0, "compact: {err}");
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read store dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("_trash") {
                parquet_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

/// The table straight from its files: the reference every feed answer is checked against.
fn reference(data: &Path, table: &str) -> LazyFrame {
    let mut files = Vec::new();
    parquet_files(&data.join("store").join(table), &mut files);
    assert!(!files.is_empty(), "no Parquet files for {table}");
    let paths: Vec<PlRefPath> = files
        .iter()
        .map(|p| PlRefPath::try_from_path(p).expect("path"))
        .collect();
    let args = ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        ..ScanArgsParquet::default()
    };
    LazyFrame::scan_parquet_files(paths.into_iter().collect(), args).expect("scan")
}

fn strings(frame: &DataFrame, column: &str) -> Vec<String> {
    let values = frame
        .column(column)
        .expect("column")
        .str()
        .expect("strings");
    (0..values.len())
        .map(|i| values.get(i).unwrap_or_default().to_owned())
        .collect()
}

fn ts(text: &str) -> Expr {
    let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").expect("timestamp");
    lit(t.and_utc().timestamp_micros()).cast(DataType::Datetime(TimeUnit::Microseconds, None))
}

struct Feed {
    server: Server,
    key: String,
}

impl Feed {
    async fn get(&self, path_and_query: &str, key: &str) -> (u16, Value) {
        let response = client()
            .get(self.server.url(&format!("/odata/{path_and_query}")))
            .bearer_auth(key)
            .header("Prefer", "odata.maxpagesize=700")
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        assert_eq!(
            response
                .headers()
                .get("odata-version")
                .and_then(|v| v.to_str().ok()),
            Some("4.0"),
            "{path_and_query}"
        );
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Every row of a collection, following `@odata.nextLink` to the end.
    async fn all(&self, path_and_query: &str) -> Vec<Value> {
        self.all_as(path_and_query, &self.key.clone()).await
    }

    async fn all_as(&self, path_and_query: &str, key: &str) -> Vec<Value> {
        let (status, mut page) = self.get(path_and_query, key).await;
        assert_eq!(status, 200, "{path_and_query}: {page}");
        let mut rows = Vec::new();
        loop {
            rows.extend(
                page["value"]
                    .as_array()
                    .expect("value array")
                    .iter()
                    .cloned(),
            );
            let Some(next) = page["@odata.nextLink"].as_str() else {
                break;
            };
            let response = client()
                .get(next)
                .bearer_auth(key)
                .header("Prefer", "odata.maxpagesize=700")
                .send()
                .await
                .expect("next page");
            assert_eq!(response.status().as_u16(), 200, "{next}");
            page = response.json().await.expect("json");
        }
        rows
    }
}

fn uids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["ChatUID"].as_str().expect("ChatUID").to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn no_duplicates(ids: &[String], what: &str) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: a row came twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_answers_match_polars_on_the_same_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_owned();
    dataset(&data);
    let server = Server::start(&data, &[]);
    let key = server.first_key.clone().expect("admin key");
    let feed = Feed { server, key };
    let chats = || reference(&data, "Chats");

    // Filters: each pair is a feed query and the same question in polars.
    let august = chats().filter(
        col("SiteKey")
            .eq(lit(3))
            .and(col("Started").gt_eq(ts("2024-08-01T00:00:00")))
            .and(col("Started").lt(ts("2024-09-01T00:00:00"))),
    );
    let cases: Vec<(&str, LazyFrame)> = vec![
        (
            "Chats?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z&$select=ChatUID,SiteKey,Started,Channel,Rating,WaitedSeconds",
            august.clone(),
        ),
        (
            "Chats?$filter=(SiteKey in (1,2) or Rating gt 3) and not Missed",
            chats().filter(col("SiteKey").is_in(lit(Series::new("s".into(), [1i32, 2])).implode(true), false).or(col("Rating").gt(lit(3))).and(col("Missed").not())),
        ),
        (
            "Chats?$filter=contains(tolower(Name),'an') and startswith(Channel,'w') and length(Email) gt 12",
            chats().filter(
                col("Name").str().to_lowercase().str().contains_literal(lit("an"))
                    .and(col("Channel").str().starts_with(lit("w")))
                    .and(col("Email").str().len_chars().gt(lit(12))),
            ),
        ),
        (
            "Chats?$filter=year(Started) eq 2024 and month(Started) eq 8 and hour(Started) ge 15 and day(Started) le 10",
            chats().filter(
                col("Started").dt().year().eq(lit(2024))
                    .and(col("Started").dt().month().eq(lit(8)))
                    .and(col("Started").dt().hour().gt_eq(lit(15)))
                    .and(col("Started").dt().day().lt_eq(lit(10))),
            ),
        ),
        (
            "Chats?$filter=WaitedSeconds add DurationSeconds gt 900 and WaitedSeconds mod 2 eq 0",
            chats().filter(
                (col("WaitedSeconds") + col("DurationSeconds")).gt(lit(900))
                    .and((col("WaitedSeconds") % lit(2)).eq(lit(0))),
            ),
        ),
        (
            "Chats?$filter=FirstResponseSeconds eq null",
            chats().filter(col("FirstResponseSeconds").is_null()),
        ),
        (
            "Chats?$filter=Tags/any(t: t eq 'Refund') and endswith(TakenByDept,'s')",
            chats().filter(
                col("Tags").list().contains(lit("Refund"), false)
                    .and(col("TakenByDept").str().ends_with(lit("s"))),
            ),
        ),
        (
            "Chats?$filter=date(Started) eq 2024-03-05 or (indexof(Email,'@') gt 8 and substring(Channel,0,3) eq 'web')",
            chats().filter(
                col("Started").dt().date().eq(lit(chrono::NaiveDate::from_ymd_opt(2024, 3, 5).expect("date")))
                    .or(col("Email").str().find_literal(lit("@")).gt(lit(8))
                        .and(col("Channel").str().slice(lit(0), lit(3)).eq(lit("web")))),
            ),
        ),
    ];
    for (query, expected) in cases {
        let expected = sorted(strings(
            &expected
                .select([col("ChatUID")])
                .collect()
                .expect("reference"),
            "ChatUID",
        ));
        assert!(
            !expected.is_empty(),
            "the reference for {query} is empty, so the case proves nothing"
        );
        let rows = feed.all(query).await;
        let got = uids(&rows);
        no_duplicates(&got, query);
        assert_eq!(sorted(got), expected, "{query}");
    }

    // $select: exactly the chosen properties (plus control information).
    let rows = feed.all("Chats?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z&$select=ChatUID,SiteKey,Started,Channel,Rating,WaitedSeconds").await;
    let names: HashSet<&str> = rows[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with('@'))
        .collect();
    assert_eq!(
        names,
        HashSet::from([
            "ChatUID",
            "SiteKey",
            "Started",
            "Channel",
            "Rating",
            "WaitedSeconds"
        ])
    );
    assert!(rows[0]["Started"]
        .as_str()
        .expect("timestamp")
        .ends_with('Z'));
    assert!(rows[0]["@odata.etag"]
        .as_str()
        .is_some_and(|e| e.starts_with("W/\"")));

    // $orderby with several keys, and $top across server pages.
    let expected = chats()
        .sort_by_exprs(
            [col("Rating"), col("Started"), col("ChatUID")],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false, false])
                .with_nulls_last(true),
        )
        .limit(1500)
        .select([col("ChatUID")])
        .collect()
        .expect("reference");
    let rows = feed
        .all("Chats?$orderby=Rating desc,Started asc&$top=1500&$select=ChatUID,Rating,Started")
        .await;
    assert_eq!(uids(&rows), strings(&expected, "ChatUID"), "ordered pages");

    // $skip/$top in the default order equal a window of the full default order.
    let everything = uids(&feed.all("Chats?$select=ChatUID").await);
    no_duplicates(&everything, "all chats");
    assert_eq!(everything.len(), CHATS.parse::<usize>().expect("n"));
    let window = uids(&feed.all("Chats?$select=ChatUID&$skip=1000&$top=900").await);
    assert_eq!(window, everything[1000..1900].to_vec(), "$skip/$top window");

    // $count in both forms.
    let expected_count = august.clone().collect().expect("reference").height();
    let (status, body) = feed.get("Chats?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z&$count=true&$top=0", &feed.key).await;
    assert_eq!(status, 200);
    assert_eq!(body["@odata.count"].as_u64(), Some(expected_count as u64));
    let (status, body) = feed.get("Chats/$count?$filter=SiteKey eq 3 and Started ge 2024-08-01T00:00:00Z and Started lt 2024-09-01T00:00:00Z", &feed.key).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_u64(), Some(expected_count as u64), "{body}");

    // $expand with nested options: the two newest operator lines of each chat.
    let lines = reference(&data, "ChatLines");
    let expected_lines = lines
        .clone()
        .filter(col("Role").eq(lit("operator")))
        .sort_by_exprs(
            [col("ChatUID"), col("Seq")],
            SortMultipleOptions::default().with_order_descending_multi([false, true]),
        )
        .group_by_stable([col("ChatUID")])
        .agg([col("Seq").head(Some(2))])
        .collect()
        .expect("reference");
    let mut newest: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let uid_col = strings(&expected_lines, "ChatUID");
    let seqs = expected_lines
        .column("Seq")
        .expect("Seq")
        .list()
        .expect("list");
    for (i, uid) in uid_col.into_iter().enumerate() {
        let seq = seqs.get_as_series(i).expect("seqs");
        let seq = seq.i32().expect("i32");
        newest.insert(
            uid,
            (0..seq.len())
                .filter_map(|j| seq.get(j))
                .map(i64::from)
                .collect(),
        );
    }
    let rows = feed.all("Chats?$filter=SiteKey eq 2&$select=ChatUID&$expand=Lines($select=Seq,Message;$filter=Role eq 'operator';$orderby=Seq desc;$top=2)").await;
    assert!(!rows.is_empty());
    for row in &rows {
        let uid = row["ChatUID"].as_str().expect("uid");
        let got: Vec<i64> = row["Lines"]
            .as_array()
            .expect("Lines")
            .iter()
            .map(|l| l["Seq"].as_i64().expect("Seq"))
            .collect();
        assert_eq!(
            got,
            newest.get(uid).cloned().unwrap_or_default(),
            "expanded lines of {uid}"
        );
    }

    // $search over chat text: the chats with a line mentioning a word (or their summary or
    // missed-chat message), in any case.
    let mentioning = |word: &str| -> HashSet<String> {
        let has = |column: &str| {
            col(column)
                .str()
                .to_lowercase()
                .str()
                .contains_literal(lit(word.to_owned()))
        };
        strings(
            &lines
                .clone()
                .filter(has("Message"))
                .select([col("ChatUID")])
                .unique(None, UniqueKeepStrategy::Any)
                .collect()
                .expect("reference"),
            "ChatUID",
        )
        .into_iter()
        .chain(strings(
            &chats()
                .filter(has("Summary").or(has("MissedMessage")))
                .select([col("ChatUID")])
                .collect()
                .expect("reference"),
            "ChatUID",
        ))
        .collect()
    };
    let refund_chats = mentioning("refund");
    assert!(
        !refund_chats.is_empty(),
        "the generator writes refund conversations"
    );
    let found: HashSet<String> = uids(&feed.all("Chats?$search=Refund&$select=ChatUID").await)
        .into_iter()
        .collect();
    assert_eq!(found, refund_chats, "$search");
    // Terms combine per chat, AND before OR: one line may hold one term and another line
    // the other.
    let help_chats = mentioning("help");
    let licences_chats = mentioning("licences");
    let refund_without_help: HashSet<String> =
        refund_chats.difference(&help_chats).cloned().collect();
    assert!(
        !refund_without_help.is_empty() && refund_without_help.len() < refund_chats.len(),
        "NOT removes some chats and keeps others"
    );
    let expected: HashSet<String> = refund_without_help
        .union(&licences_chats)
        .cloned()
        .collect();
    let found: HashSet<String> = uids(
        &feed
            .all("Chats?$search=refund NOT help OR licences&$select=ChatUID")
            .await,
    )
    .into_iter()
    .collect();
    assert_eq!(found, expected, "$search with AND, NOT and OR");
    // A first page with its total: the count is the whole search's, the rows its first.
    let (status, page) = feed
        .get(
            "Chats?$search=refund&$count=true&$orderby=Started desc&$top=5&$select=ChatUID,Started",
            &feed.key,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["@odata.count"], refund_chats.len(), "{page}");
    let rows = page["value"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    let started: Vec<&str> = rows.iter().filter_map(|r| r["Started"].as_str()).collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");
    let every = feed
        .all("Chats?$search=refund&$select=ChatUID,Started")
        .await;
    let mut newest: Vec<&str> = every.iter().filter_map(|r| r["Started"].as_str()).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(started, newest[..5]);

    // $apply: grouped figures instead of raw rows.
    let expected = chats()
        .group_by([col("SiteKey")])
        .agg([
            len().cast(DataType::Int64).alias("Chats"),
            col("WaitedSeconds").mean().alias("AvgWait"),
            col("Channel")
                .n_unique()
                .cast(DataType::Int64)
                .alias("Channels"),
        ])
        .sort(["SiteKey"], SortMultipleOptions::default())
        .collect()
        .expect("reference");
    let rows = feed.all("Chats?$apply=groupby((SiteKey),aggregate($count as Chats,WaitedSeconds with average as AvgWait,Channel with countdistinct as Channels))").await;
    assert_eq!(rows.len(), expected.height());
    let counts = expected.column("Chats").expect("Chats").i64().expect("i64");
    let waits = expected
        .column("AvgWait")
        .expect("AvgWait")
        .f64()
        .expect("f64");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["Chats"].as_i64(), counts.get(i), "{row}");
        let wait = row["AvgWait"].as_f64().expect("AvgWait");
        assert!((wait - waits.get(i).expect("wait")).abs() < 1e-9, "{row}");
    }
    let rows = feed.all("Chats?$apply=filter(Missed eq true)/aggregate($count as Missed,WaitedSeconds with max as Longest)").await;
    let missed = chats().filter(col("Missed")).collect().expect("reference");
    assert_eq!(rows[0]["Missed"].as_u64(), Some(missed.height() as u64));

    // Key and navigation access, properties and $value.
    let uid = everything[17].clone();
    let (status, chat) = feed.get(&format!("Chats('{uid}')"), &feed.key).await;
    assert_eq!(status, 200, "{chat}");
    assert_eq!(chat["ChatUID"], uid.as_str());
    assert!(chat["@odata.context"]
        .as_str()
        .is_some_and(|c| c.ends_with("#Chats/$entity")));
    let expected_seqs = lines
        .clone()
        .filter(col("ChatUID").eq(lit(uid.as_str())))
        .collect()
        .expect("reference")
        .height();
    let nav = feed.all(&format!("Chats('{uid}')/Lines")).await;
    assert_eq!(nav.len(), expected_seqs);
    let (status, site) = feed
        .get(&format!("Chats('{uid}')/SiteKey"), &feed.key)
        .await;
    assert_eq!(status, 200);
    assert_eq!(site["value"], chat["SiteKey"]);
    let raw = client()
        .get(
            feed.server
                .url(&format!("/odata/Chats('{uid}')/Channel/$value")),
        )
        .bearer_auth(&feed.key)
        .send()
        .await
        .expect("raw")
        .text()
        .await
        .expect("text");
    assert_eq!(raw, chat["Channel"].as_str().expect("channel"));
    let (status, back) = feed
        .get(&format!("ChatLines(ChatUID='{uid}',Seq=1)/Chat"), &feed.key)
        .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["ChatUID"], uid.as_str());
    let (status, _) = feed.get("Chats('no-such-chat')", &feed.key).await;
    assert_eq!(status, 404);

    // A key limited to site 4 sees site 4 only, whichever way it asks.
    let site4 = create_key(&data, "read", Some("4"));
    let expected4 = chats()
        .filter(col("SiteKey").eq(lit(4)))
        .collect()
        .expect("reference")
        .height();
    let rows = feed.all_as("Chats?$select=ChatUID,SiteKey", &site4).await;
    assert_eq!(rows.len(), expected4);
    assert!(rows.iter().all(|r| r["SiteKey"] == 4));
    let (_, count) = feed.get("Chats/$count", &site4).await;
    assert_eq!(count.as_u64(), Some(expected4 as u64));
    let groups = feed
        .all_as(
            "Chats?$apply=groupby((SiteKey),aggregate($count as Chats))",
            &site4,
        )
        .await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["SiteKey"], 4);
    let lines4 = feed
        .all_as("ChatLines?$filter=Seq eq 1&$select=ChatUID,SiteKey", &site4)
        .await;
    assert!(lines4.iter().all(|r| r["SiteKey"] == 4));
    let searched = feed
        .all_as("Chats?$search=refund&$select=SiteKey", &site4)
        .await;
    assert!(searched.iter().all(|r| r["SiteKey"] == 4));
    let other_site = first_chat_of_site(&chats(), 5);
    let (status, _) = feed.get(&format!("Chats('{other_site}')"), &site4).await;
    assert_eq!(
        status, 404,
        "a chat of another site is not there for this key"
    );
    // Nor is anything reached through it: an empty answer would tell that it exists.
    for path in ["Lines", "Lines/$count"] {
        let (status, _) = feed
            .get(&format!("Chats('{other_site}')/{path}"), &site4)
            .await;
        assert_eq!(status, 404, "{path}");
    }

    exports_survive_a_round_trip(&feed, &data).await;
    third_party_client_reads_every_row(&feed, &data);
}

/// CSV (with BOM, gzip) and Parquet exports hold exactly the reference rows; multi-line
/// messages, quotes, commas and emoji survive a standard CSV parser.
async fn exports_survive_a_round_trip(feed: &Feed, data: &Path) {
    use std::io::Read;
    let expected = reference(data, "ChatLines")
        .filter(col("SiteKey").eq(lit(1)))
        .select([col("ChatUID"), col("Seq"), col("Message")])
        .collect()
        .expect("reference");
    let mut want: BTreeMap<(String, i64), String> = BTreeMap::new();
    let seqs = expected.column("Seq").expect("Seq").i32().expect("i32");
    for (i, (uid, message)) in strings(&expected, "ChatUID")
        .into_iter()
        .zip(strings(&expected, "Message"))
        .enumerate()
    {
        want.insert((uid, i64::from(seqs.get(i).expect("seq"))), message);
    }
    assert!(
        want.values().any(|m| m.contains('\n'))
            && want.values().any(|m| m.contains('"'))
            && want.values().any(|m| m.contains('👍'))
    );

    let response = client()
        .get(feed.server.url("/api/v1/export/ChatLines.csv?$filter=SiteKey eq 1&$select=ChatUID,Seq,Message&bom=true"))
        .bearer_auth(&feed.key)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("export");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/csv"));
    let gz = response.bytes().await.expect("body");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut text)
        .expect("gunzip");
    assert!(text.starts_with(b"\xEF\xBB\xBF"), "BOM first");
    let mut reader = csv::Reader::from_reader(&text[3..]);
    assert_eq!(
        reader.headers().expect("header"),
        vec!["ChatUID", "Seq", "Message"]
    );
    let mut got: BTreeMap<(String, i64), String> = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("RFC 4180 record");
        got.insert(
            (record[0].to_owned(), record[1].parse().expect("seq")),
            record[2].to_owned(),
        );
    }
    assert_eq!(got.len(), want.len(), "every row exactly once");
    assert!(got == want, "CSV round trip changed a message");

    let response = client()
        .get(
            feed.server
                .url("/api/v1/export/Chats.parquet?$filter=SiteKey eq 2&$orderby=Started desc"),
        )
        .bearer_auth(&feed.key)
        .send()
        .await
        .expect("parquet export");
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.expect("body");
    let frame = ParquetReader::new(std::io::Cursor::new(bytes.to_vec()))
        .finish()
        .expect("Parquet");
    let expected = reference(data, "Chats")
        .filter(col("SiteKey").eq(lit(2)))
        .sort_by_exprs(
            [col("Started"), col("ChatUID")],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false])
                .with_nulls_last(true),
        )
        .select([col("ChatUID")])
        .collect()
        .expect("reference");
    assert_eq!(
        strings(&frame, "ChatUID"),
        strings(&expected, "ChatUID"),
        "ordered Parquet export"
    );
    assert_eq!(
        frame.width(),
        reference(data, "Chats")
            .collect_schema()
            .expect("schema")
            .len()
    );

    let bad = client()
        .get(
            feed.server
                .url("/api/v1/export/Chats.csv?$filter=Nope eq 1"),
        )
        .bearer_auth(&feed.key)
        .send()
        .await
        .expect("bad export");
    assert_eq!(
        bad.status().as_u16(),
        400,
        "a bad filter is refused before any row is sent"
    );

    // Every export is in the audit log: who, what, which options, but not their values.
    let audit: Value = client()
        .get(feed.server.url("/api/v1/audit?limit=1000"))
        .bearer_auth(&feed.key)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit json");
    let exports: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "export.run")
        .collect();
    assert!(exports.len() >= 2, "{audit}");
    assert!(exports
        .iter()
        .any(|e| e["target"] == "ChatLines" && e["detail"]["format"] == "csv"));
    assert!(
        !audit.to_string().contains("SiteKey eq 1"),
        "filter values stay out of the audit log"
    );
}

/// A third-party OData v4 client (python-odata, installed by scripts/test.sh) reflects
/// `$metadata` and follows every `@odata.nextLink` of the 100,000-row ChatLines set.
fn third_party_client_reads_every_row(feed: &Feed, data: &Path) {
    let lines = reference(data, "ChatLines")
        .select([len().alias("n")])
        .collect()
        .expect("reference")
        .column("n")
        .expect("n")
        .get(0)
        .expect("count")
        .try_extract::<u64>()
        .expect("u64");
    assert!(
        lines >= 100_000,
        "the data set should hold 100,000 lines, has {lines}"
    );
    let python = common::test_venv().join("bin/python");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/odata-client/read_feed.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(feed.server.url("/odata/"))
        .arg(&feed.key)
        .arg("ChatLines")
        .output()
        .expect("run the OData client");
    assert!(
        out.status.success(),
        "the python-odata client failed (run the suite with scripts/test.sh, which installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("client report");
    assert_eq!(report["rows"].as_u64(), Some(lines), "{report}");
    assert_eq!(report["duplicates"].as_u64(), Some(0), "{report}");
    assert_eq!(
        report["keys"],
        serde_json::json!(["ChatUID", "Seq"]),
        "{report}"
    );
    assert_eq!(
        report["entity_sets"],
        serde_json::json!([
            "ChatLines",
            "ChatTags",
            "Chats",
            "PageViews",
            "SurveyAnswers"
        ]),
        "the client reflected every entity set from $metadata: {report}"
    );
    let pages = report["pages"].as_u64().expect("pages");
    assert!(pages >= 20, "5,000-row pages: {report}");
    assert_eq!(
        report["followed_skiptokens"].as_u64(),
        Some(pages - 1),
        "{report}"
    );
}

fn first_chat_of_site(chats: &LazyFrame, site: i32) -> String {
    let frame = chats
        .clone()
        .filter(col("SiteKey").eq(lit(site)))
        .limit(1)
        .collect()
        .expect("reference");
    strings(&frame, "ChatUID").remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_formats_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_owned();
    let input = data.join("input");
    let (code, _, err) = run(
        &[
            "gen",
            "--chats",
            "60",
            "--seed",
            "5",
            "--out",
            input.to_str().expect("utf-8"),
        ],
        &data,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["import", input.to_str().expect("utf-8")], &data);
    assert_eq!(code, 0, "{err}");
    // The CLI export, before the service holds the data directory.
    let out = data.join("chats.csv");
    let (code, _, err) = run(
        &[
            "export",
            "Chats",
            "--filter",
            "SiteKey eq 1",
            "--select",
            "ChatUID,SiteKey,Started,Tags",
            "--out",
            out.to_str().expect("utf-8"),
        ],
        &data,
    );
    assert_eq!(code, 0, "export: {err}");
    let mut reader = csv::Reader::from_path(&out).expect("csv file");
    assert_eq!(
        reader.headers().expect("header"),
        vec!["ChatUID", "SiteKey", "Started", "Tags"]
    );
    let exported: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert!(!exported.is_empty());
    assert!(
        exported
            .iter()
            .all(|r| &r[1] == "1" && r[2].ends_with("+00:00")),
        "site 1, ISO-8601 with offset"
    );

    let server = Server::start(&data, &[("CHATVAULT_SITE_TIMEZONE", "Europe/London")]);
    let key = server.first_key.clone().expect("admin key");
    let feed = Feed {
        server,
        key: key.clone(),
    };
    let http = client();
    let (_, n) = feed.get("Chats/$count?$filter=SiteKey eq 1", &key).await;
    assert_eq!(
        n.as_u64(),
        Some(exported.len() as u64),
        "the CLI export holds every row"
    );

    // $metadata is the golden file, byte for byte; JSON CSDL on request.
    let xml = http
        .get(feed.server.url("/odata/$metadata"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("metadata");
    assert!(xml.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("application/xml"));
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../odata/metadata.xml"),
    )
    .expect("golden");
    assert_eq!(xml.text().await.expect("text"), golden);
    let (status, csdl) = feed.get("$metadata?$format=json", &key).await;
    assert_eq!(status, 200);
    assert_eq!(csdl["$EntityContainer"], "Chatvault.Container");
    let (_, service) = feed.get("", &key).await;
    let sets: Vec<&str> = service["value"]
        .as_array()
        .expect("sets")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        sets,
        [
            "Chats",
            "ChatLines",
            "SurveyAnswers",
            "PageViews",
            "ChatTags"
        ]
    );

    // Basic auth with the key as password (Power BI), and X-Api-Key.
    let basic = http
        .get(feed.server.url("/odata/Chats/$count"))
        .basic_auth("powerbi", Some(&key))
        .send()
        .await
        .expect("basic");
    assert_eq!(basic.status().as_u16(), 200);
    let header = http
        .get(feed.server.url("/odata/Chats/$count"))
        .header("X-Api-Key", &key)
        .send()
        .await
        .expect("x-api-key");
    assert_eq!(header.status().as_u16(), 200);
    let anonymous = http
        .get(feed.server.url("/odata/Chats"))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status().as_u16(), 401);

    // Metadata levels, IEEE754Compatible and the site offset.
    let full: Value = http
        .get(feed.server.url("/odata/Chats?$top=1"))
        .bearer_auth(&key)
        .header(
            "Accept",
            "application/json;odata.metadata=full;IEEE754Compatible=true",
        )
        .send()
        .await
        .expect("full")
        .json()
        .await
        .expect("json");
    let row = &full["value"][0];
    assert!(
        row["@odata.id"]
            .as_str()
            .is_some_and(|id| id.contains("/odata/Chats('")),
        "{row}"
    );
    assert_eq!(row["@odata.type"], "#Chatvault.Chat");
    assert!(row["ArchiveSeq"].is_string(), "Int64 as a string: {row}");
    let started = row["Started"].as_str().expect("Started");
    assert!(
        started.ends_with('Z') || started.ends_with("+01:00"),
        "London offset: {started}"
    );
    let none: Value = http
        .get(feed.server.url("/odata/Chats?$top=1"))
        .bearer_auth(&key)
        .header("Accept", "application/json;odata.metadata=none")
        .send()
        .await
        .expect("none")
        .json()
        .await
        .expect("json");
    assert!(none.get("@odata.context").is_none());
    assert!(none["value"][0].get("@odata.etag").is_none());
    let capped = http
        .get(feed.server.url("/odata/Chats"))
        .bearer_auth(&key)
        .header("Prefer", "odata.maxpagesize=7")
        .send()
        .await
        .expect("capped");
    assert_eq!(
        capped.headers()["preference-applied"],
        "odata.maxpagesize=7"
    );
    let capped: Value = capped.json().await.expect("json");
    assert_eq!(capped["value"].as_array().expect("rows").len(), 7);
    assert!(capped["@odata.nextLink"]
        .as_str()
        .is_some_and(|l| l.contains("skiptoken=")));
    let (status, _) = feed.get("Chats?$top=1", &key).await;
    assert_eq!(status, 200);
    let old_client = http
        .get(feed.server.url("/odata/Chats"))
        .bearer_auth(&key)
        .header("OData-MaxVersion", "3.0")
        .send()
        .await
        .expect("v3");
    assert_eq!(old_client.status().as_u16(), 400);

    // Errors: OData JSON with the offending token and position; 501 for what is not built.
    for (query, status, needle) in [
        (
            "Chats?$filter=SiteKey eq 3 andd Started gt 1",
            400,
            "position 14",
        ),
        ("Chats?$filter=Nope eq 1", 400, "'Nope' is not a property"),
        ("Chats?$filter=SiteKey eq 'three'", 400, "cannot compare"),
        ("Chats?$filter=Name has 'x'", 501, "enumeration"),
        (
            "Chats?$filter=Started add duration'P1D' gt now()",
            400,
            "position",
        ),
        ("Chats?$apply=compute(1 as x)", 501, "compute"),
        ("Chats?$select=Lines", 400, "$expand=Lines"),
        ("Chats?$skiptoken=garbage!", 400, "skiptoken"),
        ("Chats?$orderby=Tags", 400, "collection"),
        ("Nope", 404, "Nope"),
        ("$batch", 501, "$batch"),
    ] {
        let (got, body) = feed.get(query, &key).await;
        assert_eq!(got, status, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{query}: {message}");
        assert!(body["error"]["code"].is_string(), "{query}: {body}");
    }
    let (_, body) = feed.get("Chats?$filter=SiteKey eq 3 andd 1", &key).await;
    assert_eq!(body["error"]["target"], "$filter");

    // Hostile queries: a 40 KB filter (over the 32 KiB limit; larger request heads are
    // refused by the HTTP layer itself), deep nesting, a long 'in' list: all 400, fast.
    let huge = format!(
        "Chats?$filter={}",
        "SiteKey eq 1 or ".repeat(2_500) + "true"
    );
    let deep = format!(
        "Chats?$filter={}true{}",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    let nots = format!("Chats?$filter={}true", "not ".repeat(3_000));
    for query in [huge, deep, nots] {
        let started = std::time::Instant::now();
        let response = http
            .get(feed.server.url(&format!("/odata/{query}")))
            .bearer_auth(&key)
            .send()
            .await
            .map_err(|e| e.without_url())
            .expect("hostile");
        assert_eq!(response.status().as_u16(), 400, "{}", &query[..60]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    // A 100 KB query string: the HTTP layer refuses it (414) and the service carries on.
    {
        use std::io::{Read, Write};
        let addr = feed.server.base.trim_start_matches("http://").to_owned();
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        let filter = "SiteKey%20eq%201%20or%20".repeat(5_000);
        write!(stream, "GET /odata/Chats?$filter={filter}true HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 414"),
            "{}",
            &answer[..answer.len().min(80)]
        );
        let (status, _) = feed.get("Chats/$count", &key).await;
        assert_eq!(status, 200, "still serving");
    }
    let long_in = format!(
        "Chats?$filter=SiteKey in ({})&$top=1",
        (0..2000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, _) = feed.get(&long_in, &key).await;
    assert_eq!(status, 200, "a long but reasonable 'in' list is fine");
}
