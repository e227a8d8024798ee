//! `webhook-load`: replays an NDJSON file of chat documents against a running Chatvault's
//! webhook (`POST /api/v1/chats`) with N concurrent keep-alive clients, and prints the
//! throughput as one JSON line on stdout.
//!
//! Every request carries `--batch` documents as a JSON array; one document is sent as it
//! is, the way the chat server's webhook posts each chat. A 429 or 503 is retried after the
//! server's `Retry-After`; any other status, a short result list or a transport error
//! stops the run with a non-zero exit. Only loopback addresses are accepted as targets.

use anyhow::{bail, ensure, Context};
use clap::Parser;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "webhook-load",
    about = "Send every document of an NDJSON file to a Chatvault webhook with N concurrent clients; print documents/s and MB/s as one JSON line"
)]
struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8480 (loopback only).
    #[arg(long, value_name = "URL")]
    url: String,
    /// API key with the ingest scope.
    #[arg(
        long,
        env = "CHATVAULT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    key: String,
    /// NDJSON file, one chat document per line.
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Documents per request (a JSON array, or the bare document when 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Send at most this many documents (the first ones of the file).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Give up on a request after this many 429/503 answers.
    #[arg(long, default_value_t = 120)]
    max_retries: u32,
    /// Longest wait for one HTTP exchange.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// PEM CA to trust for an https:// URL (the server's private CA).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Free text copied into the JSON result (e.g. which run this is).
    #[arg(long, default_value = "")]
    label: String,
}

/// What one client did.
#[derive(Default)]
struct Tally {
    requests: u64,
    documents: u64,
    retries: u64,
    outcomes: BTreeMap<String, u64>,
    /// Milliseconds from the first attempt of a request to its 200, retries included.
    latencies_ms: Vec<f64>,
}

struct Shared {
    endpoint: String,
    key: String,
    data: Vec<u8>,
    docs: Vec<Range<usize>>,
    batch: usize,
    batches: usize,
    next: AtomicUsize,
    stop: AtomicBool,
    max_retries: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    let endpoint = endpoint(&args.url)?;

    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut docs = split_lines(&data, &args.file)?;
    if let Some(limit) = args.limit {
        docs.truncate(limit);
    }
    ensure!(
        !docs.is_empty(),
        "{} holds no documents",
        args.file.display()
    );
    let doc_bytes: usize = docs.iter().map(|r| r.len()).sum();
    let batches = docs.len().div_ceil(args.batch);

    let shared = Arc::new(Shared {
        endpoint,
        key: args.key.clone(),
        data,
        docs,
        batch: args.batch,
        batches,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        max_retries: args.max_retries,
    });

    let ca = match &args.ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca {}", path.display()))?;
            Some(reqwest::Certificate::from_pem(&pem).context("--ca is not a PEM certificate")?)
        }
        None => None,
    };
    let clients = (0..args.concurrency.min(batches))
        .map(|_| {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(args.timeout_secs.max(1)));
            if let Some(ca) = &ca {
                builder = builder.tls_certs_only([ca.clone()]);
            }
            builder.build().context("cannot build the HTTP client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let shared = shared.clone();
        tasks.spawn(async move {
            let result = run_client(&client, &shared).await;
            if result.is_err() {
                shared.stop.store(true, Ordering::Relaxed);
            }
            result
        });
    }
    let mut total = Tally::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a client task panicked")? {
            Ok(t) => {
                total.requests += t.requests;
                total.documents += t.documents;
                total.retries += t.retries;
                for (k, v) in t.outcomes {
                    *total.outcomes.entry(k).or_default() += v;
                }
                total.latencies_ms.extend(t.latencies_ms);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "load run failed after {} of {} documents",
            total.documents,
            shared.docs.len()
        )));
    }
    ensure!(
        total.documents == shared.docs.len() as u64,
        "sent {} documents but the file holds {}",
        total.documents,
        shared.docs.len()
    );

    total.latencies_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&total.latencies_ms, p);
    let line = serde_json::json!({
        "tool": "webhook-load",
        "label": args.label,
        "url": args.url,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "documents": total.documents,
        "requests": total.requests,
        "retries": total.retries,
        "bytes": doc_bytes,
        "seconds": seconds,
        "docs_per_sec": total.documents as f64 / seconds,
        "mb_per_sec": doc_bytes as f64 / 1e6 / seconds,
        "outcomes": total.outcomes,
        "latency_ms": {
            "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0),
        },
    });
    println!("{line}");
    Ok(())
}

/// `{base}/api/v1/chats`, refusing anything but a loopback host.
fn endpoint(base: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
    ensure!(
        url.scheme() == "http" || url.scheme() == "https",
        "--url {base:?} must be http:// or https://"
    );
    let host = url
        .host_str()
        .with_context(|| format!("--url {base:?} has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    ensure!(
        loopback,
        "--url {base:?}: this load generator only targets loopback addresses (127.0.0.0/8, ::1, localhost)"
    );
    Ok(format!("{}/api/v1/chats", base.trim_end_matches('/')))
}

/// Byte ranges of the non-blank lines, each checked to be one JSON value.
fn split_lines(data: &[u8], path: &std::path::Path) -> anyhow::Result<Vec<Range<usize>>> {
    let mut out = Vec::new();
    let mut start = 0usize;
    for (line_no, line) in data.split(|b| *b == b'\n').enumerate() {
        let end = start + line.len();
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            let offset = trimmed.as_ptr() as usize - line.as_ptr() as usize;
            serde_json::from_slice::<&serde_json::value::RawValue>(trimmed).with_context(|| {
                format!(
                    "{} line {}: not a JSON document",
                    path.display(),
                    line_no + 1
                )
            })?;
            out.push(start + offset..start + offset + trimmed.len());
        }
        start = end + 1;
    }
    Ok(out)
}

async fn run_client(client: &reqwest::Client, shared: &Shared) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(tally);
        }
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        if index >= shared.batches {
            return Ok(tally);
        }
        let first = index * shared.batch;
        let last = (first + shared.batch).min(shared.docs.len());
        let docs = shared
            .docs
            .get(first..last)
            .with_context(|| format!("batch {index} is out of range"))?;
        let body = request_body(&shared.data, docs)?;
        let started = Instant::now();
        let mut attempts = 0u32;
        let results = loop {
            attempts += 1;
            let response = client
                .post(&shared.endpoint)
                .bearer_auth(&shared.key)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .with_context(|| {
                    format!(
                        "POST {} (documents {first}..{last}) failed",
                        shared.endpoint
                    )
                })?;
            let status = response.status();
            let wait = retry_after(response.headers());
            let answer = response.bytes().await.with_context(|| {
                format!("reading the answer for documents {first}..{last} failed")
            })?;
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                if attempts > shared.max_retries {
                    bail!(
                        "documents {first}..{last}: still {status} after {attempts} attempts: {}",
                        snippet(&answer)
                    );
                }
                tally.retries += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            if status != StatusCode::OK {
                bail!(
                    "documents {first}..{last}: the server answered {status}: {}",
                    snippet(&answer)
                );
            }
            break parse_results(&answer, docs.len())
                .with_context(|| format!("documents {first}..{last}: unexpected answer"))?;
        };
        tally
            .latencies_ms
            .push(started.elapsed().as_secs_f64() * 1e3);
        tally.requests += 1;
        tally.documents += docs.len() as u64;
        for status in results {
            *tally.outcomes.entry(status).or_default() += 1;
        }
    }
}

/// `[doc,doc,…]` from the documents' byte ranges, or the document itself if only one.
fn request_body(data: &[u8], docs: &[Range<usize>]) -> anyhow::Result<Vec<u8>> {
    let doc = |range: &Range<usize>| {
        data.get(range.clone())
            .context("a document's byte range lies outside the file")
    };
    if let [only] = docs {
        return Ok(doc(only)?.to_vec());
    }
    let len: usize = docs.iter().map(|r| r.len() + 1).sum();
    let mut body = Vec::with_capacity(len + 2);
    body.push(b'[');
    for (i, range) in docs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(doc(range)?);
    }
    body.push(b']');
    Ok(body)
}

/// The `status` of every entry of the answer's `results`, which must have one per document.
fn parse_results(answer: &[u8], expected: usize) -> anyhow::Result<Vec<String>> {
    let value: serde_json::Value =
        serde_json::from_slice(answer).context("the answer is not JSON")?;
    let results = value
        .get("results")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("the answer has no results list: {}", snippet(answer)))?;
    ensure!(
        results.len() == expected,
        "{} results for {expected} documents",
        results.len()
    );
    results
        .iter()
        .map(|r| {
            r.get("status")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("a result has no status: {r}"))
        })
        .collect()
}

/// `Retry-After` in seconds (HTTP dates are not used by Chatvault); 1 s when absent.
fn retry_after(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.min(60))
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted
        .get(rank.min(sorted.len() - 1))
        .copied()
        .unwrap_or(0.0)
}
