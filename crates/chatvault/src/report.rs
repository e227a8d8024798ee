//! `chatvault report list|run`: the report library and engine from the command line.

use anyhow::Context;
use chatvault_reports::{Engine, EngineConfig, Library, RunRequest};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

pub fn engine_config(config: &Config) -> anyhow::Result<EngineConfig> {
    Ok(EngineConfig {
        time_limit: Duration::from_secs(config.reports.time_limit_secs.max(1)),
        site_tz: config.site_tz()?,
    })
}

/// Built-ins and custom reports, one per line.
pub async fn list(config: Config) -> anyhow::Result<ExitCode> {
    let library = Library::new(crate::runtime::open_catalog(&config).await?);
    library.seed().await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<5} {:<6} {:<14} NAME",
        "ID", "TYPE", "DATES", "GROUP"
    )?;
    for report in library.list().await? {
        writeln!(
            out,
            "{:<24} {:<5} {:<6} {:<14} {}{}",
            report.id,
            report.r#type,
            report.date_selector_type,
            report.group_name,
            report.name,
            if report.builtin { "" } else { " (custom)" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one report for a site and period; the result goes to stdout.
pub async fn run(
    config: Config,
    id: String,
    site: i32,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(&config).await?;
    let library = Library::new(runtime.catalog.clone());
    library.seed().await?;
    let report = library.get(&id).await?;
    let engine = Engine::new(runtime.store.clone(), engine_config(&config)?);
    let request = RunRequest {
        site_key: site,
        from,
        to,
    };
    let result = engine
        .run(&report, &request, None, engine.today())
        .await
        .with_context(|| format!("report {id}"))?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Csv => out.write_all(&result.to_csv()?)?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &result.to_json())?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The report routes' service for `serve`, with the built-in library seeded.
pub async fn service(
    runtime: &Runtime,
    config: &Config,
) -> anyhow::Result<chatvault_server::ReportService> {
    let library = Library::new(runtime.catalog.clone());
    let seeded = library.seed().await?;
    tracing::info!(reports = seeded, "built-in reports seeded");
    Ok(chatvault_server::ReportService {
        library,
        engine: Engine::new(runtime.store.clone(), engine_config(config)?),
    })
}
