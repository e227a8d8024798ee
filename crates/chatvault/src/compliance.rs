//! The compliance subcommands: audit log, signed digests, legal holds, erasure.

use anyhow::Context;
use chatvault_catalog::{ApiKey, AuditEvent, HoldScope};
use chatvault_compliance::{
    check_digest, export_digest, write_digest, Person, Removed, RetentionAction, SignedDigest,
    SigningKey,
};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::runtime::Runtime;

/// An audit event for something done from the command line, by the local OS user.
pub fn cli_event(action: &str, target: &str, detail: serde_json::Value) -> AuditEvent {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    AuditEvent {
        actor: format!("cli:{user}"),
        address: "local".to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    }
}

/// A new key's audit entry: its id, name, scopes and sites, never the secret.
pub fn key_created(key: &ApiKey) -> AuditEvent {
    cli_event(
        "key.create",
        &key.id,
        serde_json::json!({"name": key.name, "scopes": key.scopes, "sites": key.sites}),
    )
}

pub async fn audit_verify(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let report = catalog.verify_audit().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Audit log: {} entries, head {}",
            report.entries,
            report.head_sha256.as_deref().unwrap_or("(empty)")
        );
        for p in &report.problems {
            println!("  ! {p}");
        }
        println!(
            "audit verify: {}",
            if report.ok() { "OK" } else { "FAILED" }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn audit_list(
    config: Config,
    after: Option<u64>,
    action: Option<String>,
    limit: u32,
) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let entries = catalog
        .list_audit(after, action.as_deref(), limit)
        .await
        .context("cannot read the audit log")?;
    for e in entries {
        let at = chrono::DateTime::from_timestamp_micros(e.at_us)
            .map_or_else(|| e.at_us.to_string(), |t| t.to_rfc3339());
        println!(
            "{:>6} {at} {:<16} {:<24} {} from {} {}",
            e.seq, e.action, e.target, e.actor, e.address, e.detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn signing_key_path(config: &Config) -> PathBuf {
    config.data_dir.join("digest-signing.key")
}

/// Where `serve` writes its periodic digests.
pub fn digests_dir(config: &Config) -> PathBuf {
    config.data_dir.join("digests")
}

pub fn signing_key(config: &Config) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::load_or_create(&signing_key_path(config))?)
}

/// Reads only (no data-directory lock), so it works beside a running `serve`.
pub async fn digest_export(config: Config, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let key = signing_key(&config)?;
    let event = cli_event("digest.export", "", serde_json::Value::Null);
    let digest = export_digest(&config.archive_dir(), &catalog, &key, event).await?;
    let path = match out {
        Some(path) => {
            std::fs::write(&path, serde_json::to_vec_pretty(&digest)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            path
        }
        None => write_digest(&digests_dir(&config), &digest)?,
    };
    eprintln!(
        "Signed digest of {} segments, {} records and {} audit entries; public key {}",
        digest.digest.segments.len(),
        digest.digest.records,
        digest.digest.audit_entries,
        digest.public_key
    );
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn verify_digest(
    config: Config,
    file: PathBuf,
    public_key: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let digest: SignedDigest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a Chatvault digest", file.display()))?;
    let catalog = crate::runtime::open_catalog(&config).await?;
    let check = check_digest(
        &digest,
        public_key.as_deref(),
        &config.archive_dir(),
        Some(&catalog),
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&check)?);
    } else {
        println!(
            "Digest of {}: signature {}; {} segments checked",
            file.display(),
            if check.signature_valid {
                "valid"
            } else {
                "INVALID"
            },
            check.segments_checked
        );
        if public_key.is_none() {
            println!("  (signature checked against the key the digest names; pass --public-key to pin the key you trust)");
        }
        for p in &check.problems {
            println!("  ! {p}");
        }
        println!(
            "verify-digest: {}",
            if check.ok() { "OK" } else { "FAILED" }
        );
    }
    Ok(if check.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The erasure journal: present only while an erasure is under way (or was cut short).
pub fn journal_path(config: &Config) -> PathBuf {
    config.data_dir.join("erasure.journal")
}

pub async fn hold_place(
    config: Config,
    scope: HoldScope,
    reason: String,
) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let by = cli_event("hold.place", "", serde_json::Value::Null);
    let hold = catalog.place_hold(&scope, &reason, &by.actor).await?;
    catalog
        .append_audit(&AuditEvent {
            target: hold.id.clone(),
            detail: serde_json::json!({"scope": hold.scope, "reason": hold.reason}),
            ..by
        })
        .await?;
    eprintln!("Placed legal hold {}", hold.id);
    println!("{}", hold.id);
    Ok(ExitCode::SUCCESS)
}

pub async fn hold_release(config: Config, id: String) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let by = cli_event("hold.release", &id, serde_json::Value::Null);
    if !catalog.release_hold(&id, &by.actor).await? {
        anyhow::bail!("no active legal hold has id {id:?} (see `chatvault hold list`)");
    }
    catalog.append_audit(&by).await?;
    println!("released {id}");
    Ok(ExitCode::SUCCESS)
}

pub async fn hold_list(config: Config, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let holds = catalog.list_holds(all).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&holds)?);
        return Ok(ExitCode::SUCCESS);
    }
    for h in holds {
        let scope = match &h.scope {
            HoldScope::Chat { chat_uid } => format!("chat {chat_uid}"),
            HoldScope::Site {
                site_key,
                from_date,
                to_date,
            } => format!(
                "site {site_key} from {} to {}",
                from_date.as_deref().unwrap_or("the start"),
                to_date.as_deref().unwrap_or("now")
            ),
            HoldScope::Email { email } => format!("email {email}"),
        };
        let state = if h.released_us.is_some() {
            "released"
        } else {
            "active"
        };
        println!(
            "{:<18} {state:<8} {scope:<48} {} (by {})",
            h.id, h.reason, h.placed_by
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn erase(
    config: Config,
    person: Person,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Opening takes the data directory's lock and starts a new segment, so every segment
    // holding the person's chats is closed and can be rewritten.
    let runtime = Runtime::open(&config).await?;
    let event = cli_event("erasure.apply", "", serde_json::Value::Null);
    let removed = runtime.stores.erase(&person, &event, dry_run).await?;
    show_removal(
        &removed,
        dry_run,
        json,
        &format!("chats of this {}", person.kind()),
    )
}

/// The retention policy of `config` as of today: each site's cutoff date and action.
pub fn retention_policy(
    config: &Config,
) -> impl Fn(i64) -> Option<(String, RetentionAction)> + Send + Sync + 'static {
    let today = chrono::Utc::now().date_naive();
    let policy = config.retention.clone();
    move |site| {
        policy.days(site).map(|days| {
            let cutoff = (today - chrono::Days::new(u64::from(days))).to_string();
            (cutoff, policy.action(site))
        })
    }
}

pub async fn retention_apply(
    config: Config,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(&config).await?;
    let event = cli_event("retention.apply", "", serde_json::Value::Null);
    let removed = runtime
        .stores
        .apply_retention(retention_policy(&config), &event, dry_run)
        .await?;
    show_removal(&removed, dry_run, json, "chats past their retention period")
}

/// Applies the retention policy inside `serve`: once shortly after start, then every
/// `retention.run_every_secs`. A plan is made first without pausing ingest; only when it
/// finds work is the run repeated as the pipeline's exclusive work (plan again, rewrite,
/// rebuild), so a hold placed in between is honoured and no batch interleaves.
pub fn spawn_scheduled_retention(
    config: &Config,
    runtime: &Runtime,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = config.retention.run_every_secs;
    if every == 0 || !config.retention.has_policy() {
        return None;
    }
    let (config, pipeline, stores) = (
        config.clone(),
        runtime.pipeline.clone(),
        runtime.stores.clone(),
    );
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(every));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let requested_by = AuditEvent {
            actor: "scheduler".to_owned(),
            address: "local".to_owned(),
            action: "retention.apply".to_owned(),
            target: String::new(),
            detail: serde_json::Value::Null,
        };
        loop {
            ticker.tick().await;
            let preview = stores
                .apply_retention(retention_policy(&config), &requested_by, true)
                .await;
            match preview {
                Ok(p) if p.plan.chats.is_empty() && p.plan.anonymise.is_empty() => {
                    tracing::info!(held = p.plan.held.len(), "retention: nothing has expired");
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "retention: cannot plan; will retry at the next run");
                    continue;
                }
            }
            let (stores, policy, event) = (
                stores.clone(),
                retention_policy(&config),
                requested_by.clone(),
            );
            let run = pipeline
                .exclusive(move || {
                    Box::pin(async move { stores.apply_retention(policy, &event, false).await })
                })
                .await;
            match run {
                Ok(Ok(Removed {
                    receipt: Some(r), ..
                })) => tracing::info!(
                    deleted = r.chats,
                    anonymised = r.anonymised,
                    held = r.held,
                    receipt = %r.id,
                    "retention applied"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "retention run failed; its journal is finished at the next start")
                }
                Err(e) => tracing::error!(error = %e, "retention run refused"),
            }
        }
    }))
}

/// Shows what a removal planned and, unless a dry run, its receipt.
fn show_removal(
    removed: &Removed,
    dry_run: bool,
    json: bool,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let Removed { plan, receipt } = removed;
    if json {
        println!("{}", serde_json::to_string_pretty(removed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    println!("{verb} {} {what}", plan.chats.len());
    for uid in &plan.chats {
        println!("  {uid}");
    }
    if !plan.anonymise.is_empty() {
        let verb = if dry_run {
            "Would anonymise"
        } else {
            "Anonymised"
        };
        println!("{verb} {} {what}", plan.anonymise.len());
        for (uid, a) in &plan.anonymise {
            let fields: Vec<&str> = a.fields.iter().map(|f| f.name()).collect();
            println!("  {uid} ({})", fields.join(", "));
        }
    }
    for (uid, holds) in &plan.held {
        println!("  {uid} kept: under legal hold {}", holds.join(", "));
    }
    if let Some(r) = receipt {
        println!(
            "Rewrote {} archive segments ({} records emptied or masked); receipt {} is audit entry {}",
            r.segments, r.records, r.id, r.audit_seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bundle.json` and `transcript.html` into `out` (created if needed). Reads only.
pub async fn legal_export(
    config: Config,
    person: Person,
    out: PathBuf,
) -> anyhow::Result<ExitCode> {
    let catalog = crate::runtime::open_catalog(&config).await?;
    let bundle =
        chatvault_compliance::legal_export(&config.archive_dir(), &catalog, &person).await?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = out.join("bundle.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&bundle)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let html = out.join("transcript.html");
    std::fs::write(&html, chatvault_compliance::transcript_html(&bundle))
        .with_context(|| format!("cannot write {}", html.display()))?;
    let versions: usize = bundle.chats.iter().map(|c| c.versions.len()).sum();
    catalog
        .append_audit(&cli_event(
            "export.legal",
            "",
            serde_json::json!({"selector": person.kind(), "chats": bundle.chats.len(), "versions": versions}),
        ))
        .await?;
    eprintln!(
        "Exported {} chats ({versions} archived versions) of this {}",
        bundle.chats.len(),
        person.kind()
    );
    println!("{}", json.display());
    println!("{}", html.display());
    Ok(ExitCode::SUCCESS)
}
