//! Compliance (admin): legal holds, erasure with a preview and a receipt, the retention
//! policy, and the audit log.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use chatvault_catalog::{AuditRecord, HoldScope, LegalHold, Scope};
use chatvault_compliance::Removed;
use chatvault_server::{AppState, ErasureRequest, HoldRequest};

use crate::error::ConsoleError;
use crate::session::{Form, Signed};
use crate::view::{render, utc, Nav};
use crate::ConsoleConfig;

const AUDIT_PAGE: u32 = 100;

pub struct HoldLine {
    pub id: String,
    pub covers: String,
    pub reason: String,
    pub placed: String,
    pub released: String,
    pub active: bool,
}

impl From<LegalHold> for HoldLine {
    fn from(hold: LegalHold) -> Self {
        HoldLine {
            covers: describe(&hold.scope),
            placed: format!("{} by {}", utc(hold.placed_us), hold.placed_by),
            released: match (hold.released_us, &hold.released_by) {
                (Some(at), Some(by)) => format!("{} by {by}", utc(at)),
                _ => String::new(),
            },
            active: hold.released_us.is_none(),
            id: hold.id,
            reason: hold.reason,
        }
    }
}

pub fn describe(scope: &HoldScope) -> String {
    match scope {
        HoldScope::Chat { chat_uid } => format!("chat {chat_uid}"),
        HoldScope::Email { email } => format!("every chat of {email}"),
        HoldScope::Site {
            site_key,
            from_date,
            to_date,
        } => format!(
            "site {site_key}, {} to {}",
            from_date.as_deref().unwrap_or("the start"),
            to_date.as_deref().unwrap_or("today")
        ),
    }
}

pub struct AuditLine {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl From<AuditRecord> for AuditLine {
    fn from(r: AuditRecord) -> Self {
        AuditLine {
            seq: r.seq,
            at: utc(r.at_us),
            actor: r.actor,
            address: r.address,
            action: r.action,
            target: r.target,
            detail: if r.detail.is_null() {
                String::new()
            } else {
                r.detail.to_string()
            },
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct AuditQuery {
    action: String,
    after: Option<u64>,
}

#[derive(Template)]
#[template(path = "compliance.html")]
struct CompliancePage {
    nav: Nav,
    holds: Vec<HoldLine>,
    retention: String,
    retention_last: String,
    verify_last: String,
    digest_last: String,
    audit: Vec<AuditLine>,
    audit_action: String,
    audit_next: Option<String>,
}

fn unavailable(e: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Unavailable(e.to_string())
}

/// The newest audit record of `action`.
async fn last_of(state: &AppState, action: &str) -> Result<Option<AuditRecord>, ConsoleError> {
    state
        .catalog
        .newest_audit(action)
        .await
        .map_err(unavailable)
}

/// `GET /console/compliance?action=…&after=…`.
pub async fn page(
    State(state): State<AppState>,
    Extension(config): Extension<Arc<ConsoleConfig>>,
    signed: Signed,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    signed.require(Scope::Admin)?;
    let holds = state
        .catalog
        .list_holds(true)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(HoldLine::from)
        .collect();
    let action = Some(query.action.trim()).filter(|a| !a.is_empty());
    let audit: Vec<AuditLine> = state
        .catalog
        .list_audit(query.after, action, AUDIT_PAGE)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(AuditLine::from)
        .collect();
    let audit_next = (audit.len() == AUDIT_PAGE as usize)
        .then(|| audit.last())
        .flatten()
        .map(|last| {
            format!(
                "/console/compliance?{}",
                crate::feed::encode([
                    ("action", query.action.clone()),
                    ("after", last.seq.to_string())
                ])
            )
        });
    let retention_run = last_of(&state, "retention.apply").await?;
    let retention = match (&config.retention, config.retention_every) {
        (Some(policy), Some(every)) => {
            let next = retention_run.as_ref().map_or_else(
                || "within the first interval after the service started".to_owned(),
                |r| {
                    utc(r
                        .at_us
                        .saturating_add(i64::try_from(every.as_micros()).unwrap_or(i64::MAX)))
                },
            );
            format!(
                "{policy}; applied every {} s, next about {next}",
                every.as_secs()
            )
        }
        (Some(policy), None) => format!("{policy}; applied by `chatvault retention apply` only"),
        (None, _) => "No retention policy is configured: chats are kept until erased.".into(),
    };
    let page = CompliancePage {
        nav: signed.nav("compliance"),
        holds,
        retention,
        retention_last: retention_run
            .map(|r| format!("{} by {}", utc(r.at_us), r.actor))
            .unwrap_or_else(|| "never".into()),
        verify_last: last_of(&state, "archive.verify")
            .await?
            .map(|r| format!("{} by {}: {}", utc(r.at_us), r.actor, r.detail))
            .unwrap_or_else(|| "never".into()),
        digest_last: last_of(&state, "digest.export")
            .await?
            .map(|r| format!("{} ({})", utc(r.at_us), r.detail))
            .unwrap_or_else(|| "never".into()),
        audit,
        audit_action: query.action,
        audit_next,
    };
    Ok(render(&page))
}

fn field(form: &Form, name: &str) -> Option<String> {
    form.get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `POST /console/compliance/holds`: `chat_uid`, or `site` with `from`/`to`, or `email`;
/// and `reason`.
pub async fn place_hold(
    State(state): State<AppState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = signed.admin_form(&body)?;
    let site_key = field(&form, "site")
        .map(|s| s.parse::<i64>())
        .transpose()
        .map_err(|_| ConsoleError::Invalid("site: a SiteKey is a number".into()))?;
    let request = HoldRequest {
        chat_uid: field(&form, "chat_uid"),
        site_key,
        from_date: site_key.and(field(&form, "from")),
        to_date: site_key.and(field(&form, "to")),
        email: field(&form, "email"),
        reason: field(&form, "reason").unwrap_or_default(),
    };
    chatvault_server::place_hold_as(&state, &signed.principal, signed.peer, request).await?;
    Ok(Redirect::to("/console/compliance").into_response())
}

/// `POST /console/compliance/holds/{id}/release`.
pub async fn release_hold(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    signed.admin_form(&body)?;
    chatvault_server::release_hold_as(&state, &signed.principal, signed.peer, &id).await?;
    Ok(Redirect::to("/console/compliance").into_response())
}

#[derive(Template)]
#[template(path = "erasure.html")]
struct ErasurePage {
    nav: Nav,
    selector: String,
    value: String,
    chats: Vec<String>,
    held: Vec<(String, String)>,
    receipt: Option<chatvault_compliance::ErasureReceipt>,
}

/// The plan or the receipt of an erasure.
pub fn receipt_page(signed: &Signed, removed: Removed) -> Response {
    erasure_page(signed, String::new(), String::new(), removed)
}

fn erasure_page(signed: &Signed, selector: String, value: String, removed: Removed) -> Response {
    render(&ErasurePage {
        nav: signed.nav("compliance"),
        selector,
        value,
        chats: removed.plan.chats.into_iter().collect(),
        held: removed
            .plan
            .held
            .into_iter()
            .map(|(chat, holds)| (chat, holds.join(", ")))
            .collect(),
        receipt: removed.receipt,
    })
}

/// `POST /console/compliance/erasures` with `selector` (`email`, `chat_uid` or `ip`) and
/// `value`: previews what would be erased; with `confirm` repeating the value, erases.
pub async fn erase(
    State(state): State<AppState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let form = signed.admin_form(&body)?;
    let selector = field(&form, "selector").unwrap_or_default();
    let value = field(&form, "value").unwrap_or_default();
    let confirmed = field(&form, "confirm");
    if confirmed.as_ref().is_some_and(|c| *c != value) {
        return Err(ConsoleError::Invalid(
            "the confirmation does not match what was previewed; nothing was erased".into(),
        ));
    }
    let pick = |name: &str| (selector == name).then(|| value.clone());
    let request = ErasureRequest {
        email: pick("email"),
        chat_uid: pick("chat_uid"),
        ip: pick("ip"),
        dry_run: confirmed.is_none(),
    };
    let removed =
        chatvault_server::erase_as(&state, &signed.principal, signed.peer, &request).await?;
    Ok(erasure_page(&signed, selector, value, removed))
}
