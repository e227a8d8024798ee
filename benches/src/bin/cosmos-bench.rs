//! `cosmos-bench`: the Cosmos DB side of `benches/cosmos.sh`, speaking to a local
//! emulator through the same Rust SDK as Chatvault's source.
//!
//! - `load` writes generated chats into a container (created if missing), as the chat
//!   server would, and prints `{"documents", "seconds"}`.
//! - `latency` writes chats one at a time and, for each, measures how long until a
//!   running `chatvault serve` returns it over OData (`/odata/Chats?$filter=ChatUID eq …`);
//!   prints every delay and their median and maximum.
//! - `probe` times the query one poll of the source sends when nothing is new
//!   (`SELECT TOP 1000 * … WHERE c._ts >= now ORDER BY c._ts`): what the emulator adds
//!   to every poll, which grows with the container on the emulator (it scans).
//!
//! Only loopback endpoints are accepted: the emulator's self-signed certificate is
//! trusted, as the SDK allows for emulators on this machine only.

use anyhow::{bail, ensure, Context};
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::ContainerProperties;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosRuntime, FeedScope, Query,
    RoutingStrategy,
};
use chatvault_gen::Generator;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "cosmos-bench",
    about = "Load a Cosmos DB emulator and time what Chatvault makes of it"
)]
struct Args {
    /// Emulator endpoint, e.g. https://127.0.0.1:8081/ (loopback only).
    #[arg(long, value_name = "URL")]
    endpoint: String,
    /// Account key.
    #[arg(long, env = "CHATVAULT_COSMOS_KEY", hide_env_values = true)]
    key: String,
    #[arg(long, default_value = "chatserver")]
    database: String,
    #[arg(long, default_value = "chats")]
    container: String,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write chats `from..from+count` (concurrently).
    Load {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Write chats `from..from+count` one by one and time each until OData returns it.
    Latency {
        #[arg(long)]
        count: u64,
        #[arg(long)]
        from: u64,
        /// OData service root of the running server, e.g. http://127.0.0.1:8480/odata/.
        #[arg(long, value_name = "URL")]
        odata: String,
        /// API key with the read scope.
        #[arg(long, env = "CHATVAULT_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Give up on one chat after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Time the query of an idle poll `count` times.
    Probe {
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoint: AccountEndpoint = args.endpoint.parse().context("the endpoint is not a URL")?;
    let host = endpoint.url().host_str().unwrap_or_default().to_owned();
    ensure!(
        ["127.0.0.1", "localhost", "[::1]"].contains(&host.as_str()),
        "only an emulator on this machine is a valid target, not {host}"
    );
    let container = open_container(endpoint, &args).await?;
    let generator = Generator::new(args.seed);
    match args.command {
        Command::Load {
            count,
            from,
            concurrency,
        } => {
            let started = Instant::now();
            futures::stream::iter(from..from + count)
                .map(|i| {
                    let container = &container;
                    let doc = chat(&generator, i);
                    async move { upsert(container, &doc).await }
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            println!("{}", json!({"documents": count, "seconds": seconds}));
        }
        Command::Latency {
            count,
            from,
            odata,
            api_key,
            timeout_secs,
        } => {
            let url = reqwest::Url::parse(&odata).context("the OData URL")?;
            ensure!(
                url.host_str()
                    .is_some_and(|h| ["127.0.0.1", "localhost", "[::1]"].contains(&h)),
                "only a server on this machine is a valid target"
            );
            let http = reqwest::Client::new();
            let mut delays = Vec::new();
            for i in from..from + count {
                // Spread the writes over the source's poll cycle (5 s by default), so the
                // delays sample every phase of it rather than one.
                tokio::time::sleep(Duration::from_millis((i * 737) % 2000)).await;
                let doc = chat(&generator, i);
                let uid = doc["id"].as_str().unwrap_or_default().to_owned();
                upsert(&container, &doc).await?;
                let written = Instant::now();
                let query = url
                    .join(&format!("Chats?$filter=ChatUID eq '{uid}'&$select=ChatUID"))
                    .context("building the OData query")?;
                loop {
                    let body: Value = http
                        .get(query.clone())
                        .header("Authorization", format!("Bearer {api_key}"))
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    if body["value"].as_array().is_some_and(|v| !v.is_empty()) {
                        break;
                    }
                    if written.elapsed() > Duration::from_secs(timeout_secs) {
                        bail!("chat {uid} did not appear over OData within {timeout_secs} s");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                delays.push(written.elapsed().as_secs_f64());
            }
            let (median, max) = median_max(&delays);
            println!(
                "{}",
                json!({"documents": count, "delays_s": delays, "median_s": median, "max_s": max})
            );
        }
        Command::Probe { count } => {
            let mut times = Vec::new();
            for _ in 0..count {
                let since = chrono::Utc::now().timestamp();
                let query =
                    Query::from("SELECT TOP 1000 * FROM c WHERE c._ts >= @since ORDER BY c._ts")
                        .with_parameter("@since", since)?;
                let started = Instant::now();
                let found: Vec<Value> = container
                    .query_items::<Value>(query, FeedScope::full_container(), None)
                    .await?
                    .try_collect()
                    .await?;
                times.push(started.elapsed().as_secs_f64());
                ensure!(found.len() < 1000, "the probe found a busy container");
            }
            let (median, max) = median_max(&times);
            println!(
                "{}",
                json!({"queries": count, "seconds": times, "median_s": median, "max_s": max})
            );
        }
    }
    Ok(())
}

fn median_max(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    (median, sorted.last().copied().unwrap_or_default())
}

/// Chat `index` as the chat server stores it: `id` is the ChatUID (the partition key).
fn chat(generator: &Generator, index: u64) -> Value {
    let mut doc = generator.chat(index);
    let uid = doc["ChatHeader"]["ChatUID"].clone();
    doc["id"] = uid;
    doc
}

async fn upsert(container: &ContainerClient, doc: &Value) -> anyhow::Result<()> {
    let id = doc["id"]
        .as_str()
        .context("a chat without ChatUID")?
        .to_owned();
    container
        .upsert_item(id.clone(), &id, doc, None)
        .await
        .with_context(|| format!("writing chat {id}"))?;
    Ok(())
}

async fn open_container(endpoint: AccountEndpoint, args: &Args) -> anyhow::Result<ContainerClient> {
    let pool = ConnectionPoolOptions::builder()
        .with_server_certificate_validation(ServerCertificateValidation::RequiredUnlessEmulator)
        .build()?;
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await?;
    let client = CosmosClient::builder()
        .with_runtime(runtime)
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
        .build(
            AccountReference::with_authentication_key(endpoint, args.key.clone()),
            RoutingStrategy::PreferredRegions(Vec::new()),
        )
        .await
        .context("connecting to the emulator")?;
    // Both may exist already (a second run against the same emulator).
    let _ = client.create_database(&args.database, None).await;
    let _ = client
        .database_client(&args.database)
        .create_container(
            ContainerProperties::new(args.container.clone(), "/id".into()),
            None,
        )
        .await;
    client
        .database_client(&args.database)
        .container_client(&args.container, None)
        .await
        .context("opening the container")
}
