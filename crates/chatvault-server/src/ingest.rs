use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use chatvault_catalog::Scope;
use chatvault_ingest::{
    decode_body, prepare, split_documents, Encoding, Outcome, OutcomeKind, PayloadError,
    PayloadFormat, Prepared, Source, SubmitError,
};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::ApiError;
use crate::{admin, auth};
use crate::{AppState, Connection};

pub const SIGNATURE_HEADER: &str = "x-chatvault-signature";

/// Bodies up to this size (a few documents) are validated on the request's own task:
/// that takes well under a millisecond, and handing it to a blocking thread and back
/// cost more in thread switches than the validation itself when each request carries
/// one chat. Larger or compressed bodies go to the blocking pool.
const INLINE_VALIDATION_BYTES: usize = 64 * 1024;

#[derive(Serialize)]
struct IngestResponse {
    summary: BTreeMap<&'static str, usize>,
    results: Vec<Outcome>,
}

/// `POST /api/v1/chats`: one document, a JSON array, or NDJSON; optionally gzip.
#[utoipa::path(post, path = "/api/v1/chats", tag = "ingest",
    request_body(description = "One chat document, a JSON array of them, or NDJSON (one per line); `Content-Encoding: gzip` accepted",
        content(
            (Object = "application/json"),
            (String = "application/x-ndjson"),
        )),
    responses(
        (status = 200, description = "Durable; a result per document (accepted, updated, unchanged, rejected with reasons)", body = Object),
        (status = 400, description = "Not JSON, NDJSON or gzip", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or unknown API key, or a bad signature", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the ingest scope, or mutual TLS is configured and the connection presented no client certificate", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "Unsupported Content-Type or Content-Encoding", body = crate::openapi::ErrorBody),
        (status = 422, description = "Every document was rejected; same body as 200", body = Object),
        (status = 429, description = "Too many ingest requests at once (Retry-After)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The pipeline is full or unavailable (Retry-After); nothing was stored", body = crate::openapi::ErrorBody),
    ))]
pub async fn post_chats(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_client_certificate(&state, connection)?;
    auth::require(&state, &headers, Scope::Ingest).await?;
    let _slot = state
        .ingest_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "too many ingest requests at once; retry shortly",
            )
            .retry_after(1)
        })?;
    let format = payload_format(&headers)?;
    let encoding = content_encoding(&headers)?;
    let limit = state.config.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large("request body", limit));
        }
    }
    let raw = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large("request body", limit))?;
    if let Some(secret) = &state.config.webhook_secret {
        check_signature(secret, &headers, &raw)?;
    }
    let registry = state.registry.clone();
    let detail = format!("webhook {peer}");
    let inline = encoding == Encoding::Identity && raw.len() <= INLINE_VALIDATION_BYTES;
    let validate = move || -> Result<Vec<Prepared>, PayloadError> {
        let body = decode_body(&raw, encoding, limit)?;
        let pieces = split_documents(&body, format)?;
        Ok(prepare(&registry, &pieces, &detail))
    };
    let prepared = if inline {
        validate()
    } else {
        tokio::task::spawn_blocking(validate).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("validation task failed: {e}"),
            )
        })?
    }
    .map_err(payload_error)?;

    let outcomes = state
        .pipeline
        .try_submit(Source::Webhook, prepared)
        .await
        .map_err(submit_error)?;
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    for o in &outcomes {
        *summary.entry(o.status.as_str()).or_default() += 1;
    }
    let all_rejected = outcomes.iter().all(|o| o.status == OutcomeKind::Rejected);
    let status = if all_rejected {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(IngestResponse {
            summary,
            results: outcomes,
        }),
    )
        .into_response())
}

/// `DELETE /api/v1/chats/{ChatUID}`: the chat server's admin deleted the chat.
#[utoipa::path(delete, path = "/api/v1/chats/{chat_uid}", tag = "ingest",
    params(("chat_uid" = String, Path, description = "The chat's ChatUID (24 hexadecimal digits)")),
    responses(
        (status = 200, description = "Deleted (a tombstone in the archive), or already deleted", body = Object),
        (status = 400, description = "Not a ChatUID", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or unknown API key", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the ingest scope, or mutual TLS is configured and the connection presented no client certificate", body = crate::openapi::ErrorBody),
        (status = 404, description = "The archive never saw this chat", body = crate::openapi::ErrorBody),
        (status = 503, description = "The pipeline is unavailable (Retry-After)", body = crate::openapi::ErrorBody),
    ))]
pub async fn delete_chat(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
    Path(chat_uid): Path<String>,
) -> Result<Response, ApiError> {
    check_client_certificate(&state, connection)?;
    let key = auth::require(&state, &headers, Scope::Ingest).await?;
    if chat_uid.len() != 24 || !chat_uid.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidChatUID",
            format!("{chat_uid:?} is not a ChatUID (24 hexadecimal digits)"),
        ));
    }
    let item = Prepared::Delete {
        chat_uid: chat_uid.to_ascii_lowercase(),
        detail: format!("webhook delete {peer}"),
        if_version: None,
    };
    let mut outcomes = state
        .pipeline
        .try_submit(Source::Webhook, vec![item])
        .await
        .map_err(submit_error)?;
    let outcome = outcomes.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the pipeline gave no outcome",
        )
    })?;
    if outcome.status == OutcomeKind::NotFound {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ChatNotFound",
            format!("chat {chat_uid} is not in the archive"),
        ));
    }
    admin::record(
        &state,
        &key,
        peer,
        "chat.delete",
        &chat_uid.to_ascii_lowercase(),
        serde_json::json!({"status": outcome.status.as_str(), "seq": outcome.seq}),
    )
    .await?;
    Ok(Json(outcome).into_response())
}

/// With mutual TLS configured, the webhook takes documents only from a client that
/// presented a certificate the client CA vouches for (the TLS handshake checked it).
fn check_client_certificate(
    state: &AppState,
    connection: Option<Extension<Connection>>,
) -> Result<(), ApiError> {
    let presented = connection.is_some_and(|c| c.client_certificate);
    if state.config.require_client_certificate && !presented {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ClientCertificateRequired",
            "this webhook requires a TLS client certificate issued by the configured client CA",
        ));
    }
    Ok(())
}

fn payload_format(headers: &HeaderMap) -> Result<PayloadFormat, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(PayloadFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/json-seq" => Ok(PayloadFormat::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("Content-Type {content_type:?} is not accepted; use application/json (a document or an array) or application/x-ndjson"),
        )),
    }
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(Encoding::Identity),
        Some(e) if e.is_empty() || e == "identity" => Ok(Encoding::Identity),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(Encoding::Gzip),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedEncoding",
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let presented = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized(format!("this webhook requires an HMAC-SHA256 signature of the body in '{SIGNATURE_HEADER}: sha256=<hex>'")))?;
    let hex_sig = presented
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(presented.trim());
    let signature = hex::decode(hex_sig)
        .map_err(|_| ApiError::unauthorized("the signature is not hexadecimal"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| ApiError::unauthorized("the webhook secret is unusable"))?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| ApiError::unauthorized("the body's HMAC-SHA256 signature does not match"))
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!("the {what} exceeds the limit of {limit} bytes; send fewer documents per request"),
    )
}

fn payload_error(e: PayloadError) -> ApiError {
    match e {
        PayloadError::TooLarge { what, limit } => too_large(what, limit),
        PayloadError::BadGzip(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "BadEncoding", e.to_string())
        }
        PayloadError::BadJson(_) | PayloadError::Empty => {
            ApiError::new(StatusCode::BAD_REQUEST, "BadPayload", e.to_string())
        }
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy { retry_after_secs } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Busy", e.to_string())
                .retry_after(retry_after_secs)
        }
        SubmitError::Failed(_) | SubmitError::Closed => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "IngestUnavailable",
            e.to_string(),
        )
        .retry_after(5),
    }
}
