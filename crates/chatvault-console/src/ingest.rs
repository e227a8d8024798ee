//! The ingest page: each source's state, its counters since the catalog began, and the
//! documents refused lately with their reasons.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chatvault_server::AppState;
use std::collections::BTreeMap;

use crate::error::ConsoleError;
use crate::session::Signed;
use crate::view::{render, utc, Nav};

/// One source as the home and ingest pages show it.
#[derive(Debug, Clone)]
pub struct SourceLine {
    pub source: String,
    pub last_received: String,
    pub refused_last_day: u64,
    pub healthy: bool,
    /// The source's own account (for Cosmos DB: its checkpoint and lag).
    pub detail: String,
}

/// How far each Cosmos DB container has been read: the `_ts` of the newest change taken,
/// and how long ago that was (a lag while changes wait; only quiet when none do, which the
/// source's own state says).
pub async fn cosmos_positions(state: &AppState) -> Result<Vec<(String, String)>, ConsoleError> {
    let unavailable = |e: chatvault_catalog::CatalogError| ConsoleError::Unavailable(e.to_string());
    let now = chatvault_catalog::now_us() / 1_000_000;
    let mut out = Vec::new();
    for name in state
        .catalog
        .checkpoint_names()
        .await
        .map_err(unavailable)?
    {
        let Some(container) = name.strip_prefix(chatvault_ingest::COSMOS_CHECKPOINT_PREFIX) else {
            continue;
        };
        let position = state.catalog.checkpoint(&name).await.map_err(unavailable)?;
        if let Some(ts) = position.and_then(|p| p.parse::<i64>().ok()) {
            out.push((
                container.to_owned(),
                format!(
                    "changes read up to {} ({} before now)",
                    utc(ts.saturating_mul(1_000_000)),
                    crate::view::duration(now.saturating_sub(ts) as f64)
                ),
            ));
        }
    }
    Ok(out)
}

/// Every source that reported a state or delivered anything since the start.
pub fn source_lines(state: &AppState) -> Vec<SourceLine> {
    let now = chatvault_catalog::now_us();
    let mut lines: BTreeMap<String, SourceLine> = BTreeMap::new();
    for activity in state.pipeline.activity().sources(now) {
        lines.insert(
            activity.source.to_owned(),
            SourceLine {
                source: activity.source.to_owned(),
                last_received: activity.last_received_us.map(utc).unwrap_or_default(),
                refused_last_day: activity.refused_last_day,
                healthy: true,
                detail: String::new(),
            },
        );
    }
    for (name, status) in state.health.snapshot() {
        let line = lines.entry(name.clone()).or_insert_with(|| SourceLine {
            source: name,
            last_received: String::new(),
            refused_last_day: 0,
            healthy: true,
            detail: String::new(),
        });
        line.healthy = status.healthy;
        line.detail = status.detail;
    }
    if let Some(failure) = state.pipeline.failure() {
        lines.insert(
            "pipeline".into(),
            SourceLine {
                source: "pipeline".into(),
                last_received: String::new(),
                refused_last_day: 0,
                healthy: false,
                detail: failure,
            },
        );
    }
    lines.into_values().collect()
}

pub struct Counter {
    pub source: String,
    pub outcome: String,
    pub documents: i64,
    pub bytes: i64,
}

pub struct RefusalLine {
    pub at: String,
    pub source: &'static str,
    pub location: String,
    pub chat_uid: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "ingest.html")]
struct IngestPage {
    nav: Nav,
    sources: Vec<SourceLine>,
    cosmos: Vec<(String, String)>,
    counters: Vec<Counter>,
    refusals: Vec<RefusalLine>,
}

/// `GET /console/ingest`.
pub async fn page(State(state): State<AppState>, signed: Signed) -> Result<Response, ConsoleError> {
    let counters = state
        .catalog
        .ingest_stats()
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
        .into_iter()
        .map(|s| Counter {
            source: s.source,
            outcome: s.outcome,
            documents: s.documents,
            bytes: s.bytes,
        })
        .collect();
    // A refusal names no site it may be trusted for, so a site-restricted key sees only
    // that there were refusals, not what they said.
    let refusals = if signed.principal.sites.is_none() {
        state
            .pipeline
            .activity()
            .recent_refusals()
            .into_iter()
            .map(|r| RefusalLine {
                at: utc(r.at_us),
                source: r.source,
                location: r.location,
                chat_uid: r.chat_uid.unwrap_or_default(),
                reason: r.reason,
            })
            .collect()
    } else {
        Vec::new()
    };
    let page = IngestPage {
        nav: signed.nav("ingest"),
        sources: source_lines(&state),
        cosmos: cosmos_positions(&state).await?,
        counters,
        refusals,
    };
    Ok(render(&page))
}
