//! One function per subcommand.

use anyhow::{bail, Context};
use chatvault_catalog::Scope;
use chatvault_ingest::{
    import_paths, FolderConfig, FolderSource, ImportProgress, Outcome, OutcomeKind,
};
use chatvault_server::{router_with, AppState, ServerConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::compliance::{cli_event, key_created};
use crate::config::{Config, ENV_VARS};
use crate::runtime::Runtime;

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Plain HTTP off loopback would put keys and transcripts on the network in clear text.
async fn refuse_plain_http_off_loopback(listen: &str) -> anyhow::Result<()> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve the listen address {listen}"))?
        .collect();
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to serve plain HTTP on {listen} ({}), which is reachable from the network: \
             API keys and chat transcripts would cross it unencrypted. Either give a certificate \
             (CHATVAULT_TLS_CERT and CHATVAULT_TLS_KEY, or tls_cert and tls_key in [server]; the \
             README shows how to make a self-signed one for a first try), or, behind a proxy that \
             terminates TLS, pass --allow-plain-http (CHATVAULT_ALLOW_PLAIN_HTTP=true)",
            open.ip()
        );
    }
    Ok(())
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub async fn serve(
    mut config: Config,
    listen: Option<String>,
    allow_plain_http: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.server.allow_plain_http |= allow_plain_http;
    // Everything about the network is checked before the data directory is opened, so
    // a mistake is told at once rather than after a replay.
    let tls = match config.tls_files()? {
        Some(files) => Some(std::sync::Arc::new(chatvault_server::Tls::load(files)?)),
        None => None,
    };
    if tls.is_none() && !config.server.allow_plain_http {
        refuse_plain_http_off_loopback(&config.listen).await?;
    }
    let oidc = config
        .oidc()
        .map(|oidc| chatvault_oidc::Verifier::new(oidc.clone()))
        .transpose()
        .context("[auth.oidc] is invalid")?;
    let server_config = ServerConfig {
        max_body_bytes: config.ingest.max_body_bytes,
        webhook_secret: config.ingest.webhook_secret.clone(),
        max_concurrent_ingest: config.ingest.max_concurrent_requests,
        require_client_certificate: tls
            .as_ref()
            .is_some_and(|t| t.requires_client_certificates()),
        api_key_param: Some(config.auth.api_key_param.clone()).filter(|p| !p.is_empty()),
        anonymous_sites: config.auth.anonymous_sites.clone(),
        metrics_access: config.metrics_access(),
        throttle: chatvault_server::ThrottleConfig {
            burst: config.auth.failures_burst.max(1),
            per_minute: config.auth.failures_per_minute.max(1),
            ..chatvault_server::ThrottleConfig::default()
        },
        compression_level: config.compression_level()?,
        trusted_proxies: config.server.trusted_proxies.clone(),
    };
    let runtime = Runtime::open_serving(&config).await?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let mut state = AppState::new(
        runtime.catalog.clone(),
        runtime.pipeline.clone(),
        runtime.registry.clone(),
        server_config,
        metrics,
    )
    .with_odata(chatvault_odata::Service::new(query_engine(
        &config, &runtime,
    )?))
    .with_reports(crate::report::service(&runtime, &config).await?)
    .with_compliance(runtime.stores.clone());
    if let Some(oidc) = oidc {
        // An issuer that does not answer now is asked again at the first token.
        if let Err(e) = oidc.discover().await {
            tracing::warn!(issuer = oidc.issuer(), error = %e, "cannot reach the sign-in issuer yet");
        }
        state = state.with_oidc(oidc);
    }
    let first_key = if runtime.catalog.has_keys().await? {
        None
    } else {
        Some(
            runtime
                .catalog
                .create_key(
                    "admin (created at first start)",
                    &[Scope::Admin],
                    None,
                    now_us(),
                )
                .await?,
        )
    };
    if let Some(key) = &first_key {
        runtime.catalog.append_audit(&key_created(&key.key)).await?;
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut folder_task = None;
    if let Some(path) = &config.folder.path {
        let folder = FolderConfig {
            settle: Duration::from_millis(config.folder.settle_ms),
            rescan_interval: Duration::from_secs(config.folder.rescan_secs.max(1)),
            batch_files: config.folder.batch_files,
            max_file_bytes: config.folder.max_file_bytes,
            ..FolderConfig::new(path)
        };
        let health = state.health.clone();
        health.set("folder", true, format!("watching {}", path.display()));
        let source = FolderSource::new(folder, runtime.pipeline.clone(), runtime.registry.clone());
        folder_task = Some(tokio::spawn(async move {
            if let Err(e) = source.run(stop_rx).await {
                tracing::error!(error = %e, "folder source stopped");
                health.set("folder", false, e.to_string());
            }
        }));
    }

    let mut cosmos_task = None;
    if let Some(source) = runtime.cosmos_source(&config)? {
        let health = state.health.clone();
        let label = format!("{}/{}", source.config().database, source.config().container);
        health.set("cosmos", false, format!("connecting to {label}"));
        let stop = stop_tx.subscribe();
        let status = health.clone();
        cosmos_task = Some(tokio::spawn(async move {
            if let Err(e) = source
                .run(stop, move |ready, detail| {
                    status.set("cosmos", ready, detail)
                })
                .await
            {
                tracing::error!(error = %e, "Cosmos DB source stopped");
                health.set("cosmos", false, e.to_string());
            }
        }));
    }
    let background = runtime.store.spawn_background();
    let retention = crate::compliance::spawn_scheduled_retention(&config, &runtime);
    let digests = chatvault_compliance::spawn_periodic_digests(
        config.archive_dir(),
        crate::compliance::digests_dir(&config),
        runtime.catalog.clone(),
        crate::compliance::signing_key(&config)?,
        Duration::from_secs(24 * 3600),
    );
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{addr}");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Chatvault {} listening on {base}",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(out, "  data directory: {}", config.data_dir.display())?;
    writeln!(
        out,
        "  catalog:        {}",
        redact_url(&config.catalog_url())
    )?;
    writeln!(out, "  console:        {base}/console/")?;
    writeln!(out, "  OData feed:     {base}/odata/")?;
    writeln!(out, "  webhook:        POST {base}/api/v1/chats")?;
    writeln!(
        out,
        "  reports:        {base}/api/v1/reports  API docs: {base}/docs"
    )?;
    writeln!(
        out,
        "  health:         {base}/healthz  {base}/readyz  metrics: {base}/metrics"
    )?;
    if let Some(path) = &config.folder.path {
        writeln!(out, "  watched folder: {}", path.display())?;
    }
    if let Some(endpoint) = &config.cosmos.endpoint {
        writeln!(
            out,
            "  Cosmos DB:      {endpoint} {}/{}",
            config.cosmos.database, config.cosmos.container
        )?;
    }
    if runtime.open_report.truncated_bytes > 0 || runtime.replayed > 0 {
        writeln!(
            out,
            "  recovered:      cut {} torn bytes from the archive, replayed {} records into the catalog",
            runtime.open_report.truncated_bytes, runtime.replayed
        )?;
    }
    if let Some(key) = &first_key {
        writeln!(
            out,
            "  admin API key (shown once; create others with `chatvault keys create`):"
        )?;
        writeln!(out, "{}", key.secret)?;
    }
    writeln!(out, "Ready.")?;
    out.flush()?;
    drop(out);

    let reloader = tls.as_ref().map(|tls| tls.spawn_reloader());
    let hsts = (tls.is_some() && config.server.hsts_max_age_secs > 0)
        .then(|| {
            axum::http::HeaderValue::from_str(&format!(
                "max-age={}",
                config.server.hsts_max_age_secs
            ))
            .ok()
        })
        .flatten();
    let console = chatvault_console::ConsoleConfig {
        session_idle: Duration::from_secs(config.console.session_idle_mins.max(1) * 60),
        session_absolute: Duration::from_secs(config.console.session_hours.max(1) * 3600),
        retention: config.retention.describe(),
        retention_every: (config.retention.run_every_secs > 0)
            .then(|| Duration::from_secs(config.retention.run_every_secs)),
    };
    chatvault_server::serve(
        listener,
        router_with(state, chatvault_console::routes(console)),
        chatvault_server::Listening { tls, hsts },
        shutdown_signal(),
    )
    .await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for task in [folder_task, cosmos_task].into_iter().flatten() {
        let _ = task.await;
    }
    background.stop().await;
    digests.abort();
    if let Some(retention) = retention {
        retention.abort();
    }
    if let Err(e) = runtime.store.flush().await {
        tracing::warn!(error = %e, "final store flush failed; the next start replays it from the archive");
    }
    runtime.catalog.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn redact_url(url: &str) -> String {
    chatvault_catalog::redact(url)
}

struct Bar {
    bar: ProgressBar,
    docs: AtomicU64,
    rejected: AtomicU64,
}

impl ImportProgress for Bar {
    fn start(&self, total_bytes: u64) {
        self.bar.set_length(total_bytes);
    }

    fn advance(&self, bytes: u64, outcomes: &[Outcome]) {
        let docs = self
            .docs
            .fetch_add(outcomes.len() as u64, Ordering::Relaxed)
            + outcomes.len() as u64;
        let rejected = self.rejected.fetch_add(
            outcomes
                .iter()
                .filter(|o| o.status == OutcomeKind::Rejected)
                .count() as u64,
            Ordering::Relaxed,
        );
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{docs} docs ({:.0} docs/s), {rejected} rejected",
            docs as f64 / secs
        ));
        self.bar.inc(bytes);
    }
}

pub async fn import(config: Config, paths: Vec<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(&config).await?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = Bar {
        bar,
        docs: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
    };
    let started = std::time::Instant::now();
    // The columnar tables are written as the import goes (memory stays bounded), and the
    // import is done only when they hold everything it accepted.
    let background = runtime.store.spawn_background();
    let summary = import_paths(
        &paths,
        &runtime.pipeline,
        runtime.registry.clone(),
        &progress,
    )
    .await;
    background.stop().await;
    let summary = summary?;
    runtime.store.flush().await?;
    progress.bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let total = summary.outcomes.total();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"summary": summary, "seconds": elapsed})
            )?
        );
    } else {
        println!(
            "Imported {} files, {total} documents in {elapsed:.1} s ({:.0} docs/s)",
            summary.files,
            total as f64 / elapsed.max(0.001)
        );
        for reason in &summary.unreadable {
            println!("  ! {reason}");
        }
        print_outcomes(&summary.outcomes);
    }
    let clean = summary.outcomes.count(OutcomeKind::Rejected) == 0 && summary.unreadable.is_empty();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub fn gen(
    chats: u64,
    seed: u64,
    out: Option<PathBuf>,
    start: chrono::NaiveDate,
    days: u32,
) -> anyhow::Result<ExitCode> {
    let generator = chatvault_gen::Generator {
        seed,
        start,
        days: days.max(1),
    };
    let bar = if out.is_some() {
        ProgressBar::new(chats)
    } else {
        ProgressBar::hidden()
    };
    let is_stream = |p: &PathBuf| {
        chatvault_ingest::format_of_path(p)
            .is_some_and(|(f, _)| f == chatvault_ingest::PayloadFormat::Ndjson)
    };
    match out {
        Some(dir) if !is_stream(&dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for i in 0..chats {
                let doc = generator.chat(i);
                let path = dir.join(format!("{}.json", generator.chat_uid(i)));
                std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                bar.inc(1);
            }
        }
        target => {
            let sink: Box<dyn Write> = match &target {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    if path.extension().is_some_and(|e| e == "gz") {
                        Box::new(flate2::write::GzEncoder::new(
                            file,
                            flate2::Compression::fast(),
                        ))
                    } else {
                        Box::new(file)
                    }
                }
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = std::io::BufWriter::with_capacity(1 << 20, sink);
            for i in 0..chats {
                serde_json::to_writer(&mut sink, &generator.chat(i))?;
                sink.write_all(b"\n")?;
                bar.inc(1);
            }
            sink.into_inner().map_err(|e| e.into_error())?.flush()?;
        }
    }
    bar.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}

/// `chatvault demo`: `gen` for the last `days` days, `import`, then `serve` (which prints
/// the addresses and, as this is the directory's first start, an admin key).
pub async fn demo(
    config: Config,
    chats: u64,
    days: u32,
    listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    let archive = config.archive_dir();
    let in_use = std::fs::read_dir(&archive).is_ok_and(|mut entries| entries.next().is_some());
    if in_use {
        anyhow::bail!(
            "{} already holds an archive; the demo fills a fresh data directory: pass --data-dir with a new path",
            config.data_dir.display()
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let days = days.max(1);
    let today = chrono::Utc::now().date_naive();
    let start = today - chrono::Days::new(u64::from(days - 1));
    let ndjson = config.data_dir.join("demo-chats.ndjson");
    println!("Generating {chats} chats from {start} to {today} …");
    gen(chats, 1, Some(ndjson.clone()), start, days)?;
    let imported = import(config.clone(), vec![ndjson.clone()], false).await;
    std::fs::remove_file(&ndjson).with_context(|| format!("cannot remove {}", ndjson.display()))?;
    if imported? != ExitCode::SUCCESS {
        anyhow::bail!("the generated chats did not all import");
    }
    serve(config, listen, false).await
}

pub async fn keys_create(
    config: Config,
    name: String,
    scopes: Vec<Scope>,
    sites: Option<Vec<i64>>,
) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let key = catalog
        .create_key(&name, &scopes, sites.as_deref(), now_us())
        .await?;
    let scope_list: Vec<String> = key.key.scopes.iter().map(Scope::to_string).collect();
    catalog.append_audit(&key_created(&key.key)).await?;
    let site_list = key.key.sites.as_ref().map_or("all sites".to_owned(), |s| {
        format!(
            "sites {}",
            s.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        )
    });
    eprintln!("Created key {} ({name}): scopes {}; {site_list}. Store the secret now: it is not shown again.", key.key.id, scope_list.join(","));
    println!("{}", key.secret);
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_list(config: Config) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    println!(
        "{:<12} {:<8} {:<18} {:<12} NAME",
        "ID", "STATE", "SCOPES", "SITES"
    );
    for key in catalog.list_keys().await? {
        let scopes: Vec<String> = key.scopes.iter().map(Scope::to_string).collect();
        let sites = key.sites.as_ref().map_or("all".to_owned(), |s| {
            s.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        });
        println!(
            "{:<12} {:<8} {:<18} {:<12} {}",
            key.id,
            if key.revoked { "revoked" } else { "active" },
            scopes.join(","),
            sites,
            key.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn keys_revoke(config: Config, id: String) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    if !catalog.revoke_key(&id, now_us()).await? {
        bail!("no active key has id {id:?} (see `chatvault keys list`)");
    }
    catalog
        .append_audit(&cli_event("key.revoke", &id, serde_json::Value::Null))
        .await?;
    println!("revoked {id}");
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    // Opening performs the same recovery the service does at start (torn tail, catch-up),
    // so what is verified is what the service would serve.
    let runtime = Runtime::open(&config).await?;
    let outcome =
        chatvault_compliance::verify_all(config.archive_dir(), &runtime.catalog, &runtime.store)
            .await?;
    let (report, problems) = (&outcome.archive, &outcome.problems);
    let (live, deleted) = (outcome.chats, outcome.deleted_chats);
    // Recorded, so the console (and an auditor) can tell when the archive was last checked
    // and what was found.
    runtime
        .catalog
        .append_audit(&crate::compliance::cli_event(
            "archive.verify",
            "",
            serde_json::json!({
                "ok": problems.is_empty(), "segments": report.segments.len(),
                "records": report.records, "problems": problems.len(),
            }),
        ))
        .await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": problems.is_empty(), "segments": report.segments, "records": report.records,
                "chats": live, "deleted_chats": deleted, "problems": problems,
            }))?
        );
    } else {
        println!(
            "Archive: {} segments, {} records, hash chain {}",
            report.segments.len(),
            report.records,
            if report.problems.is_empty() {
                "intact"
            } else {
                "BROKEN"
            }
        );
        println!(
            "Catalog: {live} chats, {deleted} deleted; {} agree with the archive",
            if problems.is_empty() {
                "all"
            } else {
                "NOT all"
            }
        );
        for p in problems {
            println!("  ! {p}");
        }
        println!(
            "{}",
            if problems.is_empty() {
                "verify: OK"
            } else {
                "verify: FAILED"
            }
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn show_config(config: Config) -> anyhow::Result<ExitCode> {
    println!("# Effective configuration (file < environment < flags); secrets masked.");
    println!("{}", toml::to_string_pretty(&config.redacted())?);
    println!("# Environment variables:");
    for (var, key) in ENV_VARS {
        println!("#   {var:<28} -> {key}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The query engine over this node's store, as the feed and exports use it.
fn query_engine(config: &Config, runtime: &Runtime) -> anyhow::Result<chatvault_odata::Engine> {
    Ok(chatvault_odata::Engine::new(
        runtime.store.clone(),
        chatvault_odata::Settings {
            tz: config.site_tz()?,
            page_size: config.page_size.max(1) as usize,
        },
    ))
}

/// The OData options of `chatvault export`.
pub struct ExportQuery {
    pub filter: Option<String>,
    pub select: Option<String>,
    pub orderby: Option<String>,
}

pub async fn export(
    config: Config,
    entity_set: String,
    query: ExportQuery,
    format: chatvault_odata::export::ExportFormat,
    out: PathBuf,
) -> anyhow::Result<ExitCode> {
    let Some(set) = chatvault_odata::model::entity_set(&entity_set) else {
        let known: Vec<&str> = chatvault_odata::model::ENTITY_SETS
            .iter()
            .map(|s| s.name)
            .collect();
        bail!(
            "no entity set named '{entity_set}' (there are {})",
            known.join(", ")
        );
    };
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("$filter", &query.filter),
        ("$select", &query.select),
        ("$orderby", &query.orderby),
    ] {
        if let Some(value) = value {
            pairs.append_pair(name, value);
        }
    }
    let options = chatvault_odata::QueryOptions::parse(&pairs.finish())?;
    let runtime = Runtime::open(&config).await?;
    let engine = query_engine(&config, &runtime)?;
    // Which options shaped the export, not their values: a filter may name a person.
    let shaped_by: Vec<&str> = [
        ("$filter", &query.filter),
        ("$select", &query.select),
        ("$orderby", &query.orderby),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|_| name))
    .collect();
    runtime
        .catalog
        .append_audit(&cli_event(
            "export.run",
            set.name,
            serde_json::json!({"format": format.extension(), "options": shaped_by}),
        ))
        .await?;
    let to_stdout = out.as_os_str() == "-";
    let partial = out.with_extension(format!(
        "{}partial",
        out.extension()
            .map(|e| format!("{}.", e.to_string_lossy()))
            .unwrap_or_default()
    ));
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} rows ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if to_stdout {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let gzip = out.extension().is_some_and(|e| e == "gz");
    let rows = tokio::task::block_in_place(|| -> anyhow::Result<u64> {
        let sink: Box<dyn Write> = if to_stdout {
            Box::new(std::io::stdout().lock())
        } else {
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
        };
        let now = chrono::Utc::now().naive_utc();
        let access = chatvault_odata::Access::default();
        let mut progress = |n: u64| bar.set_position(n);
        let rows = chatvault_odata::export::export_maybe_gzip(
            &engine,
            set,
            &options,
            &access,
            format,
            now,
            sink,
            gzip,
            &mut progress,
        )?;
        Ok(rows)
    })?;
    bar.finish_and_clear();
    if !to_stdout {
        std::fs::rename(&partial, &out)
            .with_context(|| format!("cannot move the export into place at {}", out.display()))?;
        eprintln!("Exported {rows} rows of {} to {}", set.name, out.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn compact(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(&config).await?;
    runtime.store.flush().await?;
    let report = runtime.store.compact(true).await?;
    println!(
        "Compacted {} partitions: {} files became {}; {} superseded or deleted chats dropped",
        report.partitions, report.files_before, report.files_after, report.deletes_applied
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn rebuild(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(&config).await?;
    // The catalog has applied the whole archive by now, so its watermark is the record count.
    let total = runtime.catalog.next_seq().await?;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let replayed = runtime
        .store
        .rebuild(&config.archive_dir(), &|n| bar.set_position(n))
        .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!("Rebuilt the columnar store from {replayed} archive records in {secs:.1} s ({:.0} records/s)", replayed as f64 / secs.max(0.001));
    Ok(ExitCode::SUCCESS)
}

/// The outcome counts and the first rejection reasons of an import or a backfill.
fn print_outcomes(outcomes: &chatvault_ingest::OutcomeTally) {
    for kind in [
        OutcomeKind::Accepted,
        OutcomeKind::Updated,
        OutcomeKind::Unchanged,
        OutcomeKind::Rejected,
    ] {
        println!("  {:<10} {}", kind.as_str(), outcomes.count(kind));
    }
    for reason in &outcomes.rejections {
        println!("  ! {reason}");
    }
    let shown = outcomes.rejections.len() as u64;
    let rejected = outcomes.count(OutcomeKind::Rejected);
    if rejected > shown {
        println!("  … and {} more rejections", rejected - shown);
    }
}

const NO_COSMOS: &str = "no Cosmos DB source is configured: set CHATVAULT_COSMOS_ENDPOINT, _KEY (or _KEY_FILE), _DATABASE and _CONTAINER";

pub async fn import_cosmos(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    // Checked before the runtime opens (and locks the data directory).
    config.cosmos()?.context(NO_COSMOS)?;
    let runtime = Runtime::open(&config).await?;
    let source = runtime.cosmos_source(&config)?.context(NO_COSMOS)?;
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} documents ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let background = runtime.store.spawn_background();
    let summary = source.backfill(&|n| bar.set_position(n)).await?;
    background.stop().await;
    runtime.store.flush().await?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("Read {} documents from Cosmos DB", summary.documents);
        print_outcomes(&summary.outcomes);
    }
    let rejected = summary.outcomes.count(OutcomeKind::Rejected);
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
