//! `backup` and `restore`: the data directory's layout from the configuration, a progress
//! bar, and the replay that makes a restored copy current.

use anyhow::Context;
use chatvault_backup::Layout;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::runtime::Runtime;

fn layout(config: &Config) -> anyhow::Result<Layout> {
    let catalog = config.embedded_catalog_file().with_context(|| {
        format!(
            "the catalog is not embedded ({}): `chatvault backup` copies an embedded (SQLite) \
             catalog with the files; back a PostgreSQL catalog up with pg_dump or the service's \
             own backups",
            chatvault_catalog::redact(&config.catalog_url())
        )
    })?;
    Ok(Layout {
        data_dir: config.data_dir.clone(),
        catalog,
        archive_dir: config.archive_dir(),
        store_dir: config.store_dir(),
        extras: vec![
            crate::compliance::signing_key_path(config),
            crate::compliance::digests_dir(config),
        ],
        erasure_journal: crate::compliance::journal_path(config),
    })
}

/// A byte-count progress bar, and the callback that moves it as a copy goes.
fn bytes_bar() -> (ProgressBar, impl Fn(u64, u64) + Send + Sync + 'static) {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shown = bar.clone();
    let progress = move |done: u64, total: u64| {
        shown.set_length(total);
        shown.set_position(done);
    };
    (bar, progress)
}

pub async fn backup(config: Config, out: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let layout = layout(&config)?;
    // The catalog alone, never the data directory's lock: `serve` may hold it and go on
    // writing while the copy is taken.
    let catalog = crate::runtime::open_catalog(&config).await?;
    let (bar, progress) = bytes_bar();
    let started = std::time::Instant::now();
    let report = chatvault_backup::backup(
        &catalog,
        &layout,
        &out,
        env!("CARGO_PKG_VERSION"),
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    let manifest = &report.manifest;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": out, "files": manifest.files.len(), "bytes": manifest.bytes(),
                "attempts": report.attempts, "seconds": started.elapsed().as_secs_f64(),
            }))?
        );
    } else {
        println!(
            "Backed up {} files ({:.1} MiB) to {} in {:.1} s{}",
            manifest.files.len(),
            manifest.bytes() as f64 / 1048576.0,
            out.display(),
            started.elapsed().as_secs_f64(),
            if report.attempts > 1 {
                format!(
                    " ({} attempts: the data changed during the first)",
                    report.attempts
                )
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(config: Config, from: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let layout = layout(&config)?;
    let (bar, progress) = bytes_bar();
    let manifest = {
        let (from, layout) = (from.clone(), layout.clone());
        tokio::task::spawn_blocking(move || chatvault_backup::restore(&from, &layout, &progress))
            .await??
    };
    bar.finish_and_clear();
    // Opening repairs the archive's tail and replays what it holds past the catalog and
    // the store (documents that arrived while the backup was being taken).
    let runtime = Runtime::open(&config).await?;
    let replayed = runtime.replayed;
    let (chats, _deleted) = runtime.catalog.chat_counts(None).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "data_dir": config.data_dir, "files": manifest.files.len(),
                "bytes": manifest.bytes(), "backup_created_us": manifest.created_us,
                "replayed_records": replayed, "chats": chats,
            }))?
        );
    } else {
        println!(
            "Restored {} files ({:.1} MiB) into {}: {chats} chats, {replayed} archive records replayed past the catalog. Run `chatvault verify` to check the copy.",
            manifest.files.len(),
            manifest.bytes() as f64 / 1048576.0,
            config.data_dir.display(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
