//! Administrative routes (admin scope): the audit log, legal holds and erasure requests,
//! and the audit entries every route records for what an operator did.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chatvault_catalog::{AuditEvent, AuditRecord, HoldScope, LegalHold, Scope};
use chatvault_compliance::{Person, Removed};
use std::net::SocketAddr;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::{auth, AppState};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Records what `who` did from `peer`. An action that succeeded but could not be audited
/// is reported as an error: compliance requires the record, and the caller can retry
/// (every audited action is idempotent).
pub async fn record(
    state: &AppState,
    who: &Principal,
    peer: SocketAddr,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<AuditRecord, ApiError> {
    let event = AuditEvent {
        actor: who.actor.clone(),
        address: peer.ip().to_string(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail,
    };
    state.catalog.append_audit(&event).await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "AuditUnavailable",
            format!("{action} was done but could not be written to the audit log: {e}"),
        )
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct AuditQuery {
    /// Entries with a larger seq than this (the previous page's `next_after`).
    after: Option<u64>,
    /// `key` matches `key.create` and `key.revoke`; `key.create` only itself.
    action: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, serde::Serialize)]
pub struct AuditPage {
    entries: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// `GET /api/v1/audit?after=&action=&limit=`: the log, oldest first, keyset-paged.
#[utoipa::path(get, path = "/api/v1/audit", tag = "compliance",
    params(
        ("after" = Option<u64>, Query, description = "Only entries after this seq (the previous page's next_after)"),
        ("action" = Option<String>, Query, description = "Only this action, or a prefix such as 'key'"),
        ("limit" = Option<u32>, Query, description = "Entries per page (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, description = "Entries, oldest first, and next_after when more follow", body = Object),
        crate::openapi::AdminRefusals,
    ))]
pub async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    auth::require(&state, &headers, Scope::Admin).await?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let entries = state
        .catalog
        .list_audit(query.after, query.action.as_deref(), limit)
        .await
        .map_err(catalog_error)?;
    let next_after = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}

fn catalog_error(e: chatvault_catalog::CatalogError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "CatalogUnavailable",
        e.to_string(),
    )
}

/// `POST /api/v1/holds` body: exactly one of `chat_uid`, `site_key` (with optional
/// inclusive `from_date`/`to_date`, YYYY-MM-DD) or `email`, and a `reason`.
#[derive(Debug, serde::Deserialize)]
pub struct HoldRequest {
    pub chat_uid: Option<String>,
    pub site_key: Option<i64>,
    pub from_date: Option<String>,
    pub to_date: Option<String>,
    pub email: Option<String>,
    pub reason: String,
}

fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

impl HoldRequest {
    fn scope(self) -> Result<(HoldScope, String), ApiError> {
        let invalid = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "InvalidHold", m);
        for date in [&self.from_date, &self.to_date].into_iter().flatten() {
            if !is_date(date) {
                return Err(invalid("from_date and to_date are YYYY-MM-DD"));
            }
        }
        if self.reason.trim().is_empty() {
            return Err(invalid(
                "a hold needs a reason (a case or matter reference)",
            ));
        }
        let scope = match (self.chat_uid, self.site_key, self.email) {
            (Some(chat_uid), None, None) => HoldScope::Chat { chat_uid },
            (None, Some(site_key), None) => HoldScope::Site {
                site_key,
                from_date: self.from_date,
                to_date: self.to_date,
            },
            (None, None, Some(email)) if email.contains('@') => HoldScope::Email { email },
            _ => return Err(invalid(
                "name exactly one of chat_uid, site_key (with optional from_date/to_date) or email",
            )),
        };
        Ok((scope, self.reason))
    }
}

/// Places a legal hold (admin scope; audited).
#[utoipa::path(post, path = "/api/v1/holds", tag = "compliance",
    request_body(content = Object, description = "One of chat_uid, site_key (with optional from/to dates) or email, and a reason", content_type = "application/json"),
    responses(
        (status = 201, description = "The hold", body = Object),
        (status = 400, description = "Not a hold request", body = crate::openapi::ErrorBody),
        crate::openapi::AdminRefusals,
    ))]
pub async fn place_hold(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<HoldRequest>,
) -> Result<(StatusCode, Json<LegalHold>), ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    let hold = place_hold_as(&state, &key, peer, body).await?;
    Ok((StatusCode::CREATED, Json(hold)))
}

/// Places a hold for `key` (who must hold the admin scope) and audits it.
pub async fn place_hold_as(
    state: &AppState,
    key: &Principal,
    peer: SocketAddr,
    request: HoldRequest,
) -> Result<LegalHold, ApiError> {
    require_admin(key)?;
    let (scope, reason) = request.scope()?;
    let hold = state
        .catalog
        .place_hold(&scope, &reason, &key.actor)
        .await
        .map_err(catalog_error)?;
    record(
        state,
        key,
        peer,
        "hold.place",
        &hold.id,
        serde_json::json!({"scope": hold.scope, "reason": hold.reason}),
    )
    .await?;
    Ok(hold)
}

fn require_admin(key: &Principal) -> Result<(), ApiError> {
    if key.allows(Scope::Admin) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} lacks the 'admin' scope", key.actor),
        ))
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct HoldListQuery {
    /// Include released holds.
    #[serde(default)]
    all: bool,
}

/// Legal holds, active ones unless `all=true` (admin scope).
#[utoipa::path(get, path = "/api/v1/holds", tag = "compliance",
    params(("all" = Option<bool>, Query, description = "Include released holds")),
    responses(
        (status = 200, description = "Holds", body = Object),
        crate::openapi::AdminRefusals,
    ))]
pub async fn list_holds(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HoldListQuery>,
) -> Result<Json<Vec<LegalHold>>, ApiError> {
    auth::require(&state, &headers, Scope::Admin).await?;
    let holds = state
        .catalog
        .list_holds(query.all)
        .await
        .map_err(catalog_error)?;
    Ok(Json(holds))
}

/// Releases a legal hold (admin scope; audited).
#[utoipa::path(delete, path = "/api/v1/holds/{id}", tag = "compliance",
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "The released hold", body = Object),
        crate::openapi::AdminRefusals,
        (status = 404, description = "No such hold", body = crate::openapi::ErrorBody),
        (status = 409, description = "Already released", body = crate::openapi::ErrorBody),
    ))]
pub async fn release_hold(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<LegalHold>, ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    release_hold_as(&state, &key, peer, &id).await.map(Json)
}

/// Releases hold `id` for `key` (admin scope) and audits it.
pub async fn release_hold_as(
    state: &AppState,
    key: &Principal,
    peer: SocketAddr,
    id: &str,
) -> Result<LegalHold, ApiError> {
    require_admin(key)?;
    let released = state
        .catalog
        .release_hold(id, &key.actor)
        .await
        .map_err(catalog_error)?;
    let hold = state.catalog.hold(id).await.map_err(catalog_error)?;
    match hold {
        Some(hold) if released => {
            record(
                state,
                key,
                peer,
                "hold.release",
                id,
                serde_json::Value::Null,
            )
            .await?;
            Ok(hold)
        }
        Some(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "HoldReleased",
            format!("legal hold {id} was already released"),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "HoldNotFound",
            format!("no legal hold has id {id}"),
        )),
    }
}

/// `POST /api/v1/erasures` body: exactly one of `email`, `chat_uid` or `ip`, and
/// whether only to show the plan.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    pub email: Option<String>,
    pub chat_uid: Option<String>,
    pub ip: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl ErasureRequest {
    fn person(&self) -> Result<Person, ApiError> {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        match (
            present(&self.email),
            present(&self.chat_uid),
            present(&self.ip),
        ) {
            (Some(email), None, None) if email.contains('@') => Ok(Person::Email(email.to_owned())),
            (None, Some(uid), None) => Ok(Person::Chat(uid.to_owned())),
            (None, None, Some(ip)) => Ok(Person::Ip(ip.to_owned())),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidErasure",
                "name exactly one of email (an address), chat_uid or ip",
            )),
        }
    }
}

/// Erases every chat of a person (the right to be forgotten) from the archive, the
/// catalog and the columnar store, except chats under legal hold (admin scope; audited
/// with a receipt that holds no personal data). With `dry_run` it only answers the plan.
/// Ingest pauses while the affected archive segments are rewritten and the store is
/// rebuilt; documents sent meanwhile wait or are told to retry.
#[utoipa::path(post, path = "/api/v1/erasures", tag = "compliance",
    request_body(content = Object, description = "One of email, chat_uid or ip, and optionally dry_run", content_type = "application/json"),
    responses(
        (status = 200, description = "The plan (chats, held chats) and, unless a dry run, the receipt", body = Object),
        (status = 400, description = "Not an erasure request", body = crate::openapi::ErrorBody),
        crate::openapi::AdminRefusals,
        (status = 503, description = "Erasure is not available on this node, or ingest has stopped", body = crate::openapi::ErrorBody),
    ))]
pub async fn erase(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<ErasureRequest>,
) -> Result<Json<Removed>, ApiError> {
    let key = auth::require(&state, &headers, Scope::Admin).await?;
    erase_as(&state, &key, peer, &body).await.map(Json)
}

/// Plans (a dry run) or carries out an erasure for `key` (admin scope), audited.
pub async fn erase_as(
    state: &AppState,
    key: &Principal,
    peer: SocketAddr,
    body: &ErasureRequest,
) -> Result<Removed, ApiError> {
    require_admin(key)?;
    let person = body.person()?;
    let Some(stores) = state.compliance.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ErasureUnavailable",
            "this node does not hold the archive; send erasures to the node that ingests",
        ));
    };
    let requested_by = AuditEvent {
        actor: key.actor.clone(),
        address: peer.ip().to_string(),
        action: "erasure.apply".to_owned(),
        target: String::new(),
        detail: serde_json::Value::Null,
    };
    let removed = if body.dry_run {
        // Planning only reads, so ingest goes on.
        let removed = stores
            .erase(&person, &requested_by, true)
            .await
            .map_err(erasure_error)?;
        record(
            state,
            key,
            peer,
            "erasure.plan",
            "",
            serde_json::json!({"selector": person.kind(), "chats": removed.plan.chats.len(), "held": removed.plan.held.len()}),
        )
        .await?;
        removed
    } else {
        state
            .pipeline
            .exclusive(move || {
                Box::pin(async move { stores.erase(&person, &requested_by, false).await })
            })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "IngestUnavailable",
                    e.to_string(),
                )
            })?
            .map_err(erasure_error)?
    };
    Ok(removed)
}

fn erasure_error(e: chatvault_compliance::ComplianceError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ErasureFailed",
        format!("the erasure did not complete ({e}); its journal is kept and the next start of the service finishes it"),
    )
}
